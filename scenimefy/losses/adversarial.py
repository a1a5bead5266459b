"""Adversarial losses of Stage 3: L_GAN(G, D_U) and L_cGAN(G, D_P) (paper Eq. 4, docs/deviations.md).

The paper writes the adversarial terms in the log (vanilla) form; the authors' code and the
released model train with the least-squares form (CUT's ``--gan_mode lsgan``), which we follow.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lsgan_loss(prediction: Tensor, target_is_real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al.; CUT ``GANLoss`` with ``gan_mode='lsgan'``).

    ``mean((prediction - t)^2)`` with t = 1 for real targets and t = 0 for fake ones, averaged
    over every element of ``prediction`` (a PatchGAN map ``(B, 1, H, W)`` or any shape).
    Per-image losses share the same number of elements, so the batch value is the mean of the
    per-image values.
    """
    target = 1.0 if target_is_real else 0.0
    return torch.mean((prediction - target) ** 2)
