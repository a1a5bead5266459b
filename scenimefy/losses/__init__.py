"""Loss functions, pure PyTorch: one function per paper equation (docs/method.md lists them).

Weights are applied by the caller, once. No Ray, no MLflow, nothing from the higher layers.
"""

from scenimefy.losses.adversarial import lsgan_loss
from scenimefy.losses.contrastive import (
    hard_negative_weights,
    hdce_loss,
    hdce_loss_layers,
    patch_nce_loss,
    src_loss,
    src_loss_layers,
    style_patch_nce,
)

__all__ = [
    "hard_negative_weights",
    "hdce_loss",
    "hdce_loss_layers",
    "lsgan_loss",
    "patch_nce_loss",
    "src_loss",
    "src_loss_layers",
    "style_patch_nce",
]
