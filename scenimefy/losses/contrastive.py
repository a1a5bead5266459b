"""Patch-wise contrastive losses of Stage 3 (paper Eqs. 5 and 7; docs/method.md, "Stage 3").

Every function takes the embedded patches of one encoder tap as ``(B, P, C)`` tensors,
already L2-normalised by the projection head; row ``i`` of ``q`` (queries, from the
generator's output) and row ``i`` of ``k`` (keys, from the image the output must match)
come from the same spatial position. Keys are detached inside every loss.

Negatives are always drawn from the same image, and every loss is computed per image with
batched ``(B, P, P)`` matmuls, so the loss of a batch equals the mean of the per-image losses
for any batch size (the authors' SRC folded the batch into one image and crashed at batch 2;
their NCE reshaped with the global ``opt.batch_size``).

The λ weights are applied by the caller, once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# CUT's value for the self-similarity entry of the negative block (patchnce.py, SRC.py).
_DIAGONAL_FILL = -10.0


def _check_patches(q: Tensor, k: Tensor) -> None:
    if q.dim() != 3 or q.shape != k.shape:
        raise ValueError(
            f"queries and keys must both be (B, P, C) with the same shape; got {tuple(q.shape)} and {tuple(k.shape)}"
        )


def _check_layers(*layer_lists: Sequence) -> None:
    n = len(layer_lists[0])
    if n == 0:
        raise ValueError("need at least one encoder tap; got empty lists of patches")
    if any(len(layers) != n for layers in layer_lists):
        raise ValueError(
            "every list of per-tap patches must have one entry per tap; got lengths "
            f"{[len(layers) for layers in layer_lists]}"
        )


def _eye_mask(p: int, device: torch.device) -> Tensor:
    """(P, P) boolean mask of the diagonal (a patch compared with itself)."""
    return torch.eye(p, dtype=torch.bool, device=device)


# ---------------------------------------------------------------------------------------------
# Supervised branch: StylePatchNCE (paper Eq. 5)


def patch_nce_loss(q: Tensor, k: Tensor, *, tau: float) -> Tensor:
    """PatchNCE for one tap (CUT's ``PatchNCELoss``, the term inside L_StylePatchNCE, paper Eq. 5).

    q, k: ``(B, P, C)``. Per image and query i, with logits ``s_ij = q_i·k_j / tau``:
    ``ℓ_i = −log( e^{s_ii} / (e^{s_ii} + Σ_{j≠i} e^{s_ij} + e^{−10/tau}) )`` — the positive
    is the key at the same position, the negatives are the other keys of the same image, and
    CUT keeps the diagonal of the negative block as the constant −10 instead of dropping it.
    Returns the mean of ℓ over images and positions (a scalar).
    """
    _check_patches(q, k)
    k = k.detach()
    b, p, _ = q.shape
    sim = torch.bmm(q, k.transpose(1, 2))  # (B, P, P), sim[b, i, j] = q_i·k_j
    positive = torch.diagonal(sim, dim1=1, dim2=2).unsqueeze(-1)  # (B, P, 1)
    negatives = sim.masked_fill(_eye_mask(p, q.device), _DIAGONAL_FILL)  # (B, P, P)
    logits = torch.cat([positive, negatives], dim=2) / tau  # (B, P, 1 + P); class 0 = positive
    target = torch.zeros(b * p, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.reshape(b * p, p + 1), target)


def style_patch_nce(q_layers: Sequence[Tensor], k_layers: Sequence[Tensor], *, tau: float) -> Tensor:
    """L_StylePatchNCE (paper Eq. 5): mean over taps of :func:`patch_nce_loss`.

    Queries come from ``F_s(G_enc(G(x^p)))``, keys from ``F_s(G_enc(y^p))``, one ``(B, P, C)``
    tensor per tap. λ_style is not applied here (the authors applied it twice; the caller
    applies it once).
    """
    _check_layers(q_layers, k_layers)
    losses = [patch_nce_loss(q, k, tau=tau) for q, k in zip(q_layers, k_layers)]
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------
# Unsupervised branch: SRC and hDCE, the content terms of L_unsup (paper Eq. 7)


def hard_negative_weights(k: Tensor, *, gamma: float) -> Tensor:
    """Hard-negative weights of L_hDCE, from the keys only (Hneg_SRC ``SRC.py``).

    k: ``(B, P, C)``. Per image, ``A = k kᵀ`` with the diagonal set to −10,
    ``W = softmax_row(A / gamma)``, then ``W ← W / max_row(W)``, so every row has maximum 1
    and the most similar keys (hard negatives) weigh most. Since the rowmax of a softmax row
    is its largest term, ``W_ij = exp((A_ij − max_j A_ij) / gamma)`` exactly; that form is
    used (no normalising sum to lose precision). Returns ``(B, P, P)``, detached.
    """
    if k.dim() != 3:
        raise ValueError(f"keys must be (B, P, C); got {tuple(k.shape)}")
    with torch.no_grad():
        k = k.detach()
        affinity = torch.bmm(k, k.transpose(1, 2))  # (B, P, P)
        affinity = affinity.masked_fill(_eye_mask(k.shape[1], k.device), _DIAGONAL_FILL)
        row_max = affinity.amax(dim=2, keepdim=True)  # (B, P, 1)
        return torch.exp((affinity - row_max) / gamma)


def _jensen_shannon_log(log_p: Tensor, log_r: Tensor, dim: int) -> Tensor:
    """JSD(p || r) = ½KL(p||m) + ½KL(r||m), m = (p + r)/2, from log-probabilities along ``dim``."""
    log_m = torch.logaddexp(log_p, log_r) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(dim)
    kl_r = (log_r.exp() * (log_r - log_m)).sum(dim)
    return 0.5 * (kl_p + kl_r)


def src_loss(q: Tensor, k: Tensor) -> Tensor:
    """L_SRC (semantic relation consistency, a term of paper Eq. 7; from Hneg-SRC) for one tap.

    q, k: ``(B, P, C)``. Per image, ``A_q = q qᵀ`` and ``A_k = k kᵀ`` (keys detached,
    self-similarities kept); for each patch j the distributions ``p_q(·|j) = softmax_i A_q[i, j]``
    and ``p_k(·|j)`` (the columns; the matrices are symmetric); the image's loss is
    ``Σ_j JSD(p_q(·|j) || p_k(·|j))`` — summed over the P distributions, as the authors'
    ``KLDivLoss(reduction='sum')``. Returns the mean over images (a scalar).
    """
    _check_patches(q, k)
    k = k.detach()
    log_p_q = torch.log_softmax(torch.bmm(q, q.transpose(1, 2)), dim=1)  # (B, P_i, P_j), over i
    log_p_k = torch.log_softmax(torch.bmm(k, k.transpose(1, 2)), dim=1)
    per_image = _jensen_shannon_log(log_p_q, log_p_k, dim=1).sum(dim=1)  # (B,)
    return per_image.mean()


def hdce_loss(q: Tensor, k: Tensor, weights: Tensor, *, tau: float) -> tuple[Tensor, Tensor]:
    """L_hDCE (hard-negative decoupled contrastive loss, a term of paper Eq. 7; from Hneg-SRC) for one tap.

    q, k: ``(B, P, C)``; weights: ``(B, P, P)`` from :func:`hard_negative_weights` of the keys.
    Per image, ``l⁺_i = q_i·k_i`` and ``n_ij = W_ij (q_i·k_j)`` for j ≠ i;
    ``v_i = log Σ_{j≠i} exp((n_ij − l⁺_i) / tau)`` — decoupled: the positive is not in the
    denominator, and the diagonal is excluded exactly (the authors' −10 fill contributed a
    negligible e^{(−10 − l⁺)/τ}).

    Returns ``(mean of v over images and i, logged)``: the first is the value to optimise
    (its gradient equals that of the authors' ``exp(v − sg v) − 1 + sg CE``); ``logged`` is the
    ordinary InfoNCE cross-entropy over ``[l⁺_i, n_ij (j≠i)] / tau``, detached, for reporting.
    """
    _check_patches(q, k)
    b, p, _ = q.shape
    if weights.shape != (b, p, p):
        raise ValueError(f"weights must be (B, P, P) = {(b, p, p)}; got {tuple(weights.shape)}")
    if p < 2:
        raise ValueError(f"hDCE needs at least 2 patches per image to have negatives; got P={p}")
    k = k.detach()
    weights = weights.detach()
    sim = torch.bmm(q, k.transpose(1, 2))  # (B, P, P)
    positive = torch.diagonal(sim, dim1=1, dim2=2)  # (B, P)
    negatives = (weights * sim).masked_fill(_eye_mask(p, q.device), float("-inf"))  # (B, P, P)
    v = torch.logsumexp((negatives - positive.unsqueeze(-1)) / tau, dim=2)  # (B, P)

    with torch.no_grad():
        logits = torch.cat([positive.unsqueeze(-1), negatives], dim=2) / tau  # (B, P, 1 + P)
        cross_entropy = torch.logsumexp(logits, dim=2) - logits[..., 0]  # (B, P)
    return v.mean(), cross_entropy.mean()


def src_loss_layers(q_layers: Sequence[Tensor], k_layers: Sequence[Tensor]) -> Tensor:
    """L_SRC before λ_SRC: mean over taps of :func:`src_loss` (``(1/L) Σ_l SRC_l``)."""
    _check_layers(q_layers, k_layers)
    return torch.stack([src_loss(q, k) for q, k in zip(q_layers, k_layers)]).mean()


def hdce_loss_layers(
    q_layers: Sequence[Tensor],
    k_layers: Sequence[Tensor],
    weight_layers: Sequence[Tensor],
    *,
    tau: float,
) -> tuple[Tensor, Tensor]:
    """L_hDCE before λ_hDCE: mean over taps of :func:`hdce_loss`.

    Returns ``(mean over taps of the optimised value, mean over taps of the logged CE)``.
    """
    _check_layers(q_layers, k_layers, weight_layers)
    values, logged = zip(*(hdce_loss(q, k, w, tau=tau) for q, k, w in zip(q_layers, k_layers, weight_layers)))
    return torch.stack(values).mean(), torch.stack(logged).mean()
