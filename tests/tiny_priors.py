"""Tiny random priors for tests: a re-export of `scenimefy.demo.priors` (the demo uses the same),
and `TinyFeatures`, a random feature network that stands in for the FID Inception.

Importing this module also keeps the Hugging Face libraries offline for the test process.
"""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from scenimefy.demo.priors import (  # noqa: E402,F401
    TINY_CLIP_CONFIG,
    TINY_CLIP_EMBED_DIM,
    TINY_CLIP_IMAGE_SIZE,
    TINY_CLIP_MODEL,
    register_tiny_clip_config,
    tiny_clip_model,
    tiny_mask2former,
    tiny_mask2former_config,
    tiny_priors_config,
    write_hf_cache_snapshot,
    write_random_fid_inception,
    write_random_lpips_heads,
    write_random_vgg16_trunk,
    write_tiny_clip_dir,
    write_tiny_clip_weights,
    write_tiny_mask2former,
)


class TinyFeatures(nn.Module):
    """A random conv net instead of Inception: uint8 (B, 3, H, W) -> (B, dim) mean ReLU responses."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, dim, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8  # the metrics always feed uint8
        return torch.relu(self.conv(x.float() / 127.5 - 1.0)).mean(dim=(2, 3))  # (B, dim)
