"""StyleGAN2 losses, regularisers and schedules (Stages 0 and 1)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scenimefy.losses.stylegan import (
    accumulate_ema,
    d_logistic_loss,
    ema_beta,
    g_nonsaturating_loss,
    lazy_regularization_adam_params,
    path_length_penalty,
    r1_penalty,
)


def test_d_logistic_loss_values():
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[-1.0], [1.0]])
    expected = (F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(1.0))) / 2 + (
        F.softplus(torch.tensor(-2.0)) + math.log(2)
    ) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected.item())
    assert d_logistic_loss(torch.zeros(3, 1), torch.zeros(3, 1)).item() == pytest.approx(2 * math.log(2))


def test_g_nonsaturating_loss_values():
    assert g_nonsaturating_loss(torch.zeros(4, 1)).item() == pytest.approx(math.log(2))
    assert g_nonsaturating_loss(torch.tensor([[3.0]])).item() == pytest.approx(math.log1p(math.exp(-3)))


def test_r1_penalty_linear_discriminator():
    # D(x) = sum(a * x) per image: the gradient is a for every image, so the penalty is ||a||^2
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    pred = (x * a).sum([1, 2, 3])[:, None]
    assert r1_penalty(pred, x).item() == pytest.approx(a.square().sum().item())


def test_r1_penalty_per_image_gradients_and_backprop():
    # D(x_b) = c * sum(x_b^2): grad 2 c x_b, penalty mean_b 4 c^2 ||x_b||^2; differentiable in c
    c = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    pred = c * x.square().sum([1, 2, 3])
    penalty = r1_penalty(pred, x)
    expected = (4 * 0.25 * x.detach().square().sum([1, 2, 3])).mean()
    assert penalty.item() == pytest.approx(expected.item())
    penalty.backward()  # d/dc of 4 c^2 mean ||x||^2 = 8 c mean ||x||^2
    assert c.grad.item() == pytest.approx((8 * 0.5 * x.detach().square().sum([1, 2, 3])).mean().item())


def test_path_length_penalty_linear_generator():
    # G(w) = per layer l, image += A_l w_l: the gradient w.r.t. w_l is A_l^T y
    torch.manual_seed(0)
    batch, n_latent, dim, pixels = 3, 2, 4, 2 * 2
    A = torch.randn(n_latent, 3 * pixels, dim, dtype=torch.float64)
    latents = torch.randn(batch, n_latent, dim, dtype=torch.float64, requires_grad=True)
    image = torch.einsum("lpd,bld->bp", A, latents).reshape(batch, 3, 2, 2)
    y = torch.randn(batch, 3, 2, 2, dtype=torch.float64) / 2  # N(0, I) / sqrt(H W)

    penalty, new_mean, lengths = path_length_penalty(image, latents, 1.0, decay=0.01, noise=y)

    grads = torch.einsum("lpd,bp->bld", A, y.reshape(batch, -1))  # (B, L, D)
    expected_lengths = grads.square().sum(2).mean(1).sqrt()
    expected_mean = 1.0 + 0.01 * (expected_lengths.mean() - 1.0)
    assert torch.allclose(lengths, expected_lengths)
    assert new_mean.item() == pytest.approx(expected_mean.item())
    assert not new_mean.requires_grad
    assert penalty.item() == pytest.approx((expected_lengths - expected_mean).square().mean().item())


def test_path_length_penalty_noise_is_scaled_by_image_size():
    # G(w) = w broadcast to every pixel of 1 channel: grad = sum_pixels y ~ N(0, 1) for y / sqrt(H W)
    torch.manual_seed(0)
    latents = torch.randn(4096, 1, 1, requires_grad=True)
    image = latents.reshape(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    _, _, lengths = path_length_penalty(image, latents, 0.0, decay=0.01)
    assert lengths.square().mean().item() == pytest.approx(1.0, rel=0.1)


def test_ema_beta_matches_rosinality_at_batch_32():
    assert ema_beta(32, half_life_kimg=10) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, half_life_kimg=10) == pytest.approx(0.9977844, abs=1e-7)
    assert ema_beta(16, half_life_kimg=10) == pytest.approx(0.5 ** (16 / 10_000))
    assert ema_beta(8, half_life_kimg=1) == pytest.approx(0.5 ** (8 / 1000))


def test_ema_half_life_has_one_default_the_configs():
    from scenimefy.config import Config

    with pytest.raises(TypeError, match="half_life_kimg"):
        ema_beta(32)  # no default of its own: the callers pass the config's value
    cfg = Config()
    assert cfg.pretrain.ema_half_life_kimg == cfg.finetune.ema_half_life_kimg == 10.0  # rosinality's 10 kimg
    assert ema_beta(32, half_life_kimg=0) == 0.0  # 0: the EMA copies G


def test_ema_beta_half_life_is_independent_of_batch():
    # after 10 kimg the initial weight's share is 1/2, whatever the batch
    for batch in (4, 16, 64):
        assert ema_beta(batch, half_life_kimg=10) ** (10_000 / batch) == pytest.approx(0.5)


def test_ema_beta_rampup():
    # half-life capped at rampup * images seen: 0.05 * 20000 = 1000 images
    assert ema_beta(32, half_life_kimg=10, rampup=0.05, num_images_seen=20_000) == pytest.approx(0.5 ** (32 / 1000))
    assert ema_beta(32, half_life_kimg=10, rampup=0.05, num_images_seen=10**9) == pytest.approx(
        ema_beta(32, half_life_kimg=10)
    )
    assert ema_beta(32, half_life_kimg=10, rampup=0.05, num_images_seen=0) == 0.0
    with pytest.raises(ValueError, match="num_images_seen"):
        ema_beta(32, half_life_kimg=10, rampup=0.05)


def test_accumulate_ema_arithmetic_on_parameters_only():
    model = nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([1.0, 3.0]))
        model.bias.copy_(torch.tensor([-2.0, 0.0]))
        model.running_mean.fill_(5.0)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        ema.bias.fill_(1.0)
        ema.running_mean.fill_(7.0)
    accumulate_ema(ema, model, 0.9)
    assert torch.allclose(ema.weight, torch.tensor([0.1, 0.3]))
    assert torch.allclose(ema.bias, torch.tensor([0.9 - 0.2, 0.9]))
    assert torch.equal(ema.running_mean, torch.full((2,), 7.0))  # buffers are not averaged
    assert not ema.weight.requires_grad or ema.weight.grad is None


def test_accumulate_ema_restricted_to_named_params():
    model, ema = nn.Linear(2, 2), nn.Linear(2, 2)
    before_bias = ema.bias.detach().clone()
    accumulate_ema(ema, model, 0.0, params=["weight"])
    assert torch.equal(ema.weight, model.weight)
    assert torch.equal(ema.bias, before_bias)
    with pytest.raises(KeyError, match="nope"):
        accumulate_ema(ema, model, 0.5, params=["nope"])


def test_lazy_regularization_adam_params():
    lr, betas = lazy_regularization_adam_params(0.002, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.0016)
    assert betas == pytest.approx((0.0, 0.99**0.8))
    assert betas[1] == pytest.approx(0.991992, abs=1e-6)
    assert isinstance(betas[0], float)
    lr, betas = lazy_regularization_adam_params(0.002, (0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas[1] == pytest.approx(0.990585, abs=1e-6)
    torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=lr, betas=betas)  # accepted by Adam
    with pytest.raises(ValueError, match="interval"):
        lazy_regularization_adam_params(0.002, (0.0, 0.99), 0)
