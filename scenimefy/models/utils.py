"""Small helpers shared by the training steps of every stage."""

from __future__ import annotations

from torch import nn


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Switch gradients of all of `module`'s parameters on or off (freeze a network for a step)."""
    for p in module.parameters():
        p.requires_grad_(flag)
