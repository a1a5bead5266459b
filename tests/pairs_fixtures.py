"""Tiny stage-2 inputs: G_s / G_t rosinality checkpoints and a tiny Mask2Former, on disk."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from scenimefy.models.rosinality import save_rosinality_checkpoint
from scenimefy.models.stylegan2 import Discriminator, Generator

TINY = dict(channel_multiplier=1, channel_base=256, channel_max=32)  # 32 px: channels 32, 32, 16, 8
SIZE, LATENT, N_MLP = 32, 16, 2


def tiny_pair(seed: int = 0, finetune_noise: float = 0.3, **arch) -> tuple[Generator, Generator]:
    """G_s with weights ~ N(0, 1) (visible noise and structure) and G_t = G_s with its last block
    perturbed (a stand-in for the stage-1 fine-tune of the last blocks)."""
    arch = {**TINY, **arch}
    torch.manual_seed(seed)
    g_s = Generator(SIZE, LATENT, N_MLP, **arch)
    with torch.no_grad():
        for p in g_s.parameters():
            p.normal_()
    g_t = Generator(SIZE, LATENT, N_MLP, **arch)
    g_t.load_state_dict(g_s.state_dict())
    with torch.no_grad():
        for name, p in g_t.named_parameters():
            if name.startswith(("convs.4", "convs.5", "to_rgbs.2")):
                p.add_(torch.randn_like(p) * finetune_noise)
    return g_s.eval(), g_t.eval()


def save_generator(path: Path, g: Generator) -> Path:
    """A rosinality-format checkpoint (g, d, g_ema, ...) holding g as g and g_ema."""
    arch = g.architecture()
    d = Discriminator(
        arch["size"],
        channel_multiplier=arch["channel_multiplier"],
        channel_base=arch["channel_base"],
        channel_max=arch["channel_max"],
    )
    save_rosinality_checkpoint(path, g, d, g, None, None, {"size": arch["size"]})
    return Path(path)


def write_pair_checkpoints(root: Path, seed: int = 0) -> tuple[Path, Path]:
    g_s, g_t = tiny_pair(seed)
    return save_generator(Path(root) / "g_s.pt", g_s), save_generator(Path(root) / "g_t.pt", g_t)


def score_seeds(generator, scorer, seeds: Sequence[int], *, batch_size: int) -> Iterator[dict]:
    """Stage 2 in-process: batches of scored pairs for `seeds` (a `PairGenerator` then a `PairScorer`)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    for start in range(0, len(seeds), batch_size):
        yield scorer(generator({"seed": seeds[start : start + batch_size]}))
