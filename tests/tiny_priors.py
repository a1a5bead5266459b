"""Tiny random priors for tests: a re-export of `scenimefy.demo.priors` (the demo uses the same).

Importing this module also keeps the Hugging Face libraries offline for the test process.
"""

from __future__ import annotations

import os

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
