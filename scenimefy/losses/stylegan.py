"""StyleGAN2 losses, regularisers and schedules of Stages 0 and 1 (paper Sec. 3.1; StyleGAN2, Karras et al. 2020).

Non-saturating logistic GAN loss, lazy R1 on reals, path-length regularisation, the EMA
generator's decay and update, and the Adam correction for lazy regularisation. Weights and
intervals are applied by the caller (the stage's step); these functions compute the terms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator logistic loss: ``mean softplus(D(G(z))) + mean softplus(-D(x))``."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Generator non-saturating loss: ``mean softplus(-D(G(z)))``."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """R1 gradient penalty ``mean_b ||dD(x_b)/dx_b||^2`` (Mescheder et al. 2018).

    ``real_img`` must have ``requires_grad=True`` and ``real_pred = D(real_img)``. The graph is
    kept (``create_graph``) so the penalty can be back-propagated into D. The caller weights it
    by ``gamma / 2 * interval``.
    """
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def path_length_penalty(
    fake_img: Tensor,
    latents: Tensor,
    mean_path_length: Tensor | float,
    *,
    decay: float,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Path-length regulariser (StyleGAN2 Sec. 3.2).

    ``fake_img`` (B, 3, H, W) = G(latents), ``latents`` (B, n_latent, style_dim) the broadcast
    W+ latents the image was made from (``Generator(..., return_latents=True)``). With
    ``y ~ N(0, I) / sqrt(H W)`` (or the given ``noise``), ``g_b = d(sum G(w_b) * y) / dw_b`` and
    ``l_b = sqrt(mean_layers sum_dims g_b^2)``; the running target moves as
    ``a <- a + decay (mean_b l_b - a)`` and the penalty is ``mean_b (l_b - a)^2``.

    Returns ``(penalty, new_mean_path_length (detached), path_lengths (B,))``.
    """
    if noise is None:
        noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))  # (B,)
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    penalty = (path_lengths - path_mean).pow(2).mean()
    return penalty, path_mean.detach(), path_lengths


def ema_beta(
    batch_size: int,
    *,
    half_life_kimg: float,
    rampup: float | None = None,
    num_images_seen: int | None = None,
) -> float:
    """Per-step decay of the EMA generator: ``0.5 ** (batch_size / (half_life_kimg * 1000))``.

    The EMA weights halve their memory every ``half_life_kimg`` thousand images, whatever the
    batch: at batch 32 and 10 kimg this is rosinality's ``0.5 ** (32 / 10000) = 0.9977844``.
    ``half_life_kimg`` has no default here: its one default is the config's
    ``pretrain.ema_half_life_kimg`` / ``finetune.ema_half_life_kimg``; 0 gives beta 0 (the EMA copies G).
    With ``rampup`` (NVlabs' ``ema_rampup``, e.g. 0.05) the half-life is capped at
    ``rampup * num_images_seen`` images so early averages forget the initialisation faster.
    """
    if batch_size < 1:
        raise ValueError(f"ema_beta: batch_size must be >= 1, got {batch_size}")
    half_life_images = half_life_kimg * 1000
    if rampup is not None:
        if num_images_seen is None:
            raise ValueError("ema_beta: rampup needs num_images_seen")
        half_life_images = min(half_life_images, num_images_seen * rampup)
    if half_life_images <= 0:
        return 0.0
    return 0.5 ** (batch_size / half_life_images)


@torch.no_grad()
def accumulate_ema(ema_model: nn.Module, model: nn.Module, beta: float, params: Iterable[str] | None = None) -> None:
    """``ema <- beta * ema + (1 - beta) * p`` for every parameter (buffers are not averaged).

    ``params``: restrict the update to these parameter names (e.g. the trainable set of Stage
    1; the frozen ones are identical in both models anyway).
    """
    ema_params = dict(ema_model.named_parameters())
    model_params = dict(model.named_parameters())
    names = model_params.keys() if params is None else list(params)
    for name in names:
        if name not in ema_params or name not in model_params:
            raise KeyError(f"accumulate_ema: parameter {name!r} missing from the EMA model or the model")
        ema_params[name].mul_(beta).add_(model_params[name].detach(), alpha=1 - beta)


def lazy_regularization_adam_params(
    lr: float, betas: tuple[float, float], interval: int
) -> tuple[float, tuple[float, float]]:
    """Adam settings for a network regularised every ``interval`` steps (StyleGAN2 App. B).

    With ``c = k / (k + 1)``: ``lr * c`` and ``(beta1 ** c, beta2 ** c)``, as floats (recent
    PyTorch rejects a mixed int / float betas tuple). G with k = 4: 0.0016, (0.0, 0.991992).
    """
    if interval < 1:
        raise ValueError(f"lazy regularisation interval must be >= 1, got {interval}")
    c = interval / (interval + 1)
    return lr * c, (float(betas[0]) ** c, float(betas[1]) ** c)
