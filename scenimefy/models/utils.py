"""Small helpers shared by every stage: freezing a network, reading a weights file safely."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Switch gradients of all of `module`'s parameters on or off (freeze a network for a step)."""
    for p in module.parameters():
        p.requires_grad_(flag)


def why_unreadable(path: str | os.PathLike, error: BaseException) -> str:
    """Why `torch.load(weights_only=True)` could not read `path`, in words (not PyTorch's advice to
    load with weights_only=False, which would run whatever code the file pickles)."""
    try:
        if os.path.getsize(path) == 0:
            return "the file is empty"
    except OSError:
        return "the file cannot be read"
    if "unsupported global" in str(error).lower():
        return "it pickles Python objects, which are never loaded (checkpoints hold only tensors and plain data)"
    return "it is not a PyTorch weights file, or a truncated one"


def load_weights(path: str | os.PathLike, expected: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a file it cannot read raises a one-line ValueError
    naming the file, why, and `expected` (what a checkpoint of this kind looks like)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects weights_only refuses
        raise ValueError(
            f"{os.fspath(path)} is not a checkpoint: {why_unreadable(path, e)}. Expected {expected}"
        ) from None
