"""Per-epoch schedules of Stage 3, each a pure function of the 1-based epoch (docs/method.md)."""

from __future__ import annotations

import math


def _check_total(total_epochs: int) -> None:
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1; got {total_epochs}")


def lambda_sup_schedule(epoch: int, total_epochs: int) -> float:
    """λ_sup(t) = cos(π (t − 1) / (2T)) for epoch t = 1..T (paper §3.3, Eq. 8; docs/deviations.md).

    Weighs the supervised branch (cGAN generator term and StylePatchNCE): 1 at the first
    epoch, decaying towards 0 (0.078 at t = T = 20). The authors' code computed
    cos(π/2·T·(t − 1)), which is 1 for every integer epoch; we follow the paper.
    """
    _check_total(total_epochs)
    if not 1 <= epoch <= total_epochs:
        raise ValueError(f"epoch must be in 1..{total_epochs} (1-based); got {epoch}")
    return math.cos(math.pi * (epoch - 1) / (2 * total_epochs))


def hdce_gamma_schedule(epoch: int, total_epochs: int, *, gamma_start: float, gamma_end: float) -> float:
    """γ(t) = γ_start + (γ_end − γ_start)·t/T, the hDCE hard-negative curriculum (docs/method.md).

    t is the 1-based epoch (t = 0 gives γ_start); with T = 20 and 50 → 10: 48 at t = 1,
    30 at t = 10, 10 at t = T (as the authors' ``--use_curriculum``; γ_start itself is never used
    in training).
    """
    _check_total(total_epochs)
    if not 0 <= epoch <= total_epochs:
        raise ValueError(f"epoch must be in 0..{total_epochs}; got {epoch}")
    return gamma_start + (gamma_end - gamma_start) * epoch / total_epochs


def lr_factor(epoch: int, *, n_epochs: int, n_epochs_decay: int) -> float:
    """CUT's linear lr policy: 1 − max(0, t − n_epochs)/(n_epochs_decay + 1), t the 1-based epoch.

    1.0 for t ≤ n_epochs, then linear decay: with 10 + 10 epochs, 0.909 at t = 11 ... 0.0909
    at t = 20 (never 0 during training). Clamped at 0 beyond, so a scheduler stepped after the
    last epoch is harmless. With ``torch.optim.lr_scheduler.LambdaLR`` (0-based counter e) use
    ``lambda e: lr_factor(e + 1, ...)``.
    """
    if epoch < 1:
        raise ValueError(f"epoch is 1-based; got {epoch}")
    return max(0.0, 1.0 - max(0, epoch - n_epochs) / (n_epochs_decay + 1))
