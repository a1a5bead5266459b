"""Unit tests of the Stage-3 losses: hand-computed values, per-image batching, detached keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scenimefy.losses import (
    hard_negative_weights,
    hdce_loss,
    hdce_loss_layers,
    lsgan_loss,
    patch_nce_loss,
    src_loss,
    src_loss_layers,
    style_patch_nce,
)

TAU = 0.07


def _random_patches(b: int, p: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, p, c, generator=g, dtype=torch.float64), dim=-1)


def _t(rows: list[list[float]]) -> torch.Tensor:
    """One image of patches, (1, P, C), float64."""
    return torch.tensor([rows], dtype=torch.float64)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------
# LSGAN


def test_lsgan_loss_matches_hand_value():
    pred = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    assert lsgan_loss(pred, True).item() == pytest.approx((0.25 + 4.0 + 1.0 + 0.0) / 4)
    assert lsgan_loss(pred, False).item() == pytest.approx((0.25 + 1.0 + 4.0 + 1.0) / 4)


# ---------------------------------------------------------------------------------------------
# PatchNCE / StylePatchNCE


def test_patch_nce_matches_hand_formula():
    q = _t([[1.0, 0.0], [0.0, 1.0]])
    k = _t([[0.6, 0.8], [-0.8, 0.6]])
    tau = 0.5
    # q0·k0 = 0.6, q0·k1 = -0.8; q1·k0 = 0.8, q1·k1 = 0.6; the self-negative is the constant -10.
    l0 = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(-0.8 / tau) + math.exp(-10 / tau)))
    l1 = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau) + math.exp(-10 / tau)))
    assert patch_nce_loss(q, k, tau=tau).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_patch_nce_is_lower_for_aligned_keys_than_shuffled_keys():
    q = torch.eye(4, dtype=torch.float64).unsqueeze(0)  # orthogonal patches
    aligned = patch_nce_loss(q, q.clone(), tau=TAU)
    shuffled = patch_nce_loss(q, q.roll(1, dims=1), tau=TAU)
    assert aligned.item() < 1e-3
    assert shuffled.item() > aligned.item() + 1.0


def test_style_patch_nce_is_mean_over_taps():
    qs = [_random_patches(2, 6, 4, 1), _random_patches(2, 3, 8, 2)]
    ks = [_random_patches(2, 6, 4, 3), _random_patches(2, 3, 8, 4)]
    expected = (patch_nce_loss(qs[0], ks[0], tau=TAU) + patch_nce_loss(qs[1], ks[1], tau=TAU)) / 2
    assert style_patch_nce(qs, ks, tau=TAU).item() == pytest.approx(expected.item(), rel=1e-12)


def test_patch_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        patch_nce_loss(_random_patches(1, 4, 3, 0), _random_patches(1, 5, 3, 0), tau=TAU)


# ---------------------------------------------------------------------------------------------
# SRC


def _jsd(p: list[float], r: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, r)]
    kl_p = sum(a * math.log(a / c) for a, c in zip(p, m))
    kl_r = sum(b * math.log(b / c) for b, c in zip(r, m))
    return 0.5 * kl_p + 0.5 * kl_r


def _softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_src_is_zero_when_queries_equal_keys():
    q = _random_patches(2, 5, 4, 7)
    assert src_loss(q, q.clone()).item() == pytest.approx(0.0, abs=1e-12)


def test_src_is_positive_when_relations_differ():
    assert src_loss(_random_patches(2, 5, 4, 7), _random_patches(2, 5, 4, 8)).item() > 1e-4


def test_src_matches_hand_formula():
    q = _t([[1.0, 0.0], [0.0, 1.0]])  # A_q = [[1, 0], [0, 1]]
    k = _t([[1.0, 0.0], [0.6, 0.8]])  # A_k = [[1, 0.6], [0.6, 1]]
    # column j of each affinity, softmaxed over i; the loss sums the JSD over both columns
    expected = _jsd(_softmax([1.0, 0.0]), _softmax([1.0, 0.6])) + _jsd(_softmax([0.0, 1.0]), _softmax([0.6, 1.0]))
    assert src_loss(q, k).item() == pytest.approx(expected, rel=1e-10)


def test_src_loss_layers_is_mean_over_taps():
    qs = [_random_patches(2, 5, 4, 1), _random_patches(2, 7, 4, 2)]
    ks = [_random_patches(2, 5, 4, 3), _random_patches(2, 7, 4, 4)]
    expected = (src_loss(qs[0], ks[0]) + src_loss(qs[1], ks[1])) / 2
    assert src_loss_layers(qs, ks).item() == pytest.approx(expected.item(), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Hard-negative weights


def test_hard_negative_weights_match_hand_case():
    k = _t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    gamma = 0.5
    affinity = [[-10.0, 0.0, 0.6], [0.0, -10.0, 0.8], [0.6, 0.8, -10.0]]  # k kᵀ, diagonal -10
    expected = []
    for row in affinity:
        soft = _softmax([a / gamma for a in row])
        expected.append([w / max(soft) for w in soft])
    w = hard_negative_weights(k, gamma=gamma)
    assert w.shape == (1, 3, 3)
    assert torch.allclose(w[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-15)


def test_hard_negative_weights_rows_peak_at_one_with_tiny_diagonal():
    k = _random_patches(2, 6, 4, 5)
    w = hard_negative_weights(k, gamma=0.1)
    assert torch.allclose(w.amax(dim=2), torch.ones(2, 6, dtype=torch.float64))
    assert (w > 0).all() and (w <= 1).all()
    diagonal = torch.diagonal(w, dim1=1, dim2=2)
    assert (diagonal < 1e-30).all()


def test_hard_negative_weights_are_detached():
    k = _random_patches(1, 4, 3, 0).requires_grad_(True)
    assert not hard_negative_weights(k, gamma=10.0).requires_grad


# ---------------------------------------------------------------------------------------------
# hDCE


def _hdce_by_hand(q, k, w, tau):
    """Pure-Python v_i and cross-entropy_i for one image (lists of rows)."""
    p = len(q)
    vs, ces = [], []
    for i in range(p):
        pos = _dot(q[i], k[i])
        negs = [w[i][j] * _dot(q[i], k[j]) for j in range(p) if j != i]
        vs.append(math.log(sum(math.exp((n - pos) / tau) for n in negs)))
        denom = math.exp(pos / tau) + sum(math.exp(n / tau) for n in negs)
        ces.append(-math.log(math.exp(pos / tau) / denom))
    return sum(vs) / p, sum(ces) / p


def test_hdce_matches_hand_formula():
    q = [[0.6, 0.0, 0.8], [0.0, 1.0, 0.0], [0.48, 0.6, 0.64]]
    k = [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.6, 0.8, 0.0]]
    w = [[0.9, 0.5, 0.25], [0.2, 0.9, 0.4], [0.3, 0.6, 0.9]]  # the diagonal must not matter
    tau = 0.5
    v, ce = hdce_loss(_t(q), _t(k), _t(w), tau=tau)
    v_hand, ce_hand = _hdce_by_hand(q, k, w, tau)
    assert v.item() == pytest.approx(v_hand, rel=1e-12)
    assert ce.item() == pytest.approx(ce_hand, rel=1e-12)


def test_hdce_ignores_weight_diagonal_and_logs_detached_ce():
    q, k = _random_patches(2, 5, 4, 1), _random_patches(2, 5, 4, 2)
    w = hard_negative_weights(k, gamma=1.0)
    w_other = w + torch.eye(5, dtype=torch.float64) * 3.0
    v1, ce1 = hdce_loss(q, k, w, tau=TAU)
    v2, ce2 = hdce_loss(q, k, w_other, tau=TAU)
    assert v1.item() == pytest.approx(v2.item(), rel=1e-12)
    assert ce1.item() == pytest.approx(ce2.item(), rel=1e-12)
    assert not ce1.requires_grad


def test_hdce_logged_ce_equals_standard_cross_entropy():
    q, k = _random_patches(1, 6, 4, 3), _random_patches(1, 6, 4, 4)
    w = hard_negative_weights(k, gamma=2.0)
    _, ce = hdce_loss(q, k, w, tau=TAU)
    sim = q[0] @ k[0].T
    rows = []
    for i in range(6):
        negs = torch.cat([(w[0, i] * sim[i])[:i], (w[0, i] * sim[i])[i + 1 :]])
        rows.append(torch.cat([sim[i, i : i + 1], negs]) / TAU)
    expected = F.cross_entropy(torch.stack(rows), torch.zeros(6, dtype=torch.long))
    assert ce.item() == pytest.approx(expected.item(), rel=1e-12)


def test_hdce_loss_layers_averages_taps():
    qs = [_random_patches(2, 5, 4, 1), _random_patches(2, 3, 4, 2)]
    ks = [_random_patches(2, 5, 4, 3), _random_patches(2, 3, 4, 4)]
    ws = [hard_negative_weights(k, gamma=5.0) for k in ks]
    v, ce = hdce_loss_layers(qs, ks, ws, tau=TAU)
    per_tap = [hdce_loss(q, k, w, tau=TAU) for q, k, w in zip(qs, ks, ws)]
    assert v.item() == pytest.approx((per_tap[0][0] + per_tap[1][0]).item() / 2, rel=1e-12)
    assert ce.item() == pytest.approx((per_tap[0][1] + per_tap[1][1]).item() / 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Every loss: batch value = mean of per-image values; keys receive no gradient


def _losses(q: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
    w = hard_negative_weights(k, gamma=3.0)
    return {
        "patch_nce": patch_nce_loss(q, k, tau=TAU),
        "style_patch_nce": style_patch_nce([q, q * 1.0], [k, k.flip(1)], tau=TAU),
        "src": src_loss(q, k),
        "src_layers": src_loss_layers([q, q], [k, k.flip(1)]),
        "hdce": hdce_loss(q, k, w, tau=TAU)[0],
        "hdce_logged": hdce_loss(q, k, w, tau=TAU)[1],
        "hdce_layers": hdce_loss_layers([q], [k], [w], tau=TAU)[0],
        "lsgan_real": lsgan_loss(q, True),
        "lsgan_fake": lsgan_loss(q, False),
    }


def test_every_loss_of_a_batch_is_the_mean_of_per_image_losses():
    q, k = _random_patches(3, 7, 5, 11), _random_patches(3, 7, 5, 12)
    batch = _losses(q, k)
    singles = [_losses(q[b : b + 1], k[b : b + 1]) for b in range(3)]
    for name, value in batch.items():
        expected = sum(s[name].item() for s in singles) / 3
        assert value.item() == pytest.approx(expected, rel=1e-12), name


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda q, k: patch_nce_loss(q, k, tau=TAU),
        lambda q, k: style_patch_nce([q], [k], tau=TAU),
        lambda q, k: src_loss(q, k),
        lambda q, k: src_loss_layers([q], [k]),
        lambda q, k: hdce_loss(q, k, hard_negative_weights(k, gamma=3.0), tau=TAU)[0],
        lambda q, k: hdce_loss_layers([q], [k], [hard_negative_weights(k, gamma=3.0)], tau=TAU)[0],
    ],
    ids=["patch_nce", "style_patch_nce", "src", "src_layers", "hdce", "hdce_layers"],
)
def test_keys_receive_no_gradient_and_queries_do(loss_fn):
    q = _random_patches(2, 6, 4, 21).requires_grad_(True)
    k = _random_patches(2, 6, 4, 22).requires_grad_(True)
    loss_fn(q, k).backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum().item() > 0
