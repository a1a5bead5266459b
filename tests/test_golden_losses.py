"""Golden losses: the first steps of the tiny translator at a fixed seed.

A refactor that should not change numerics must reproduce tests/golden/translator_tiny.json.
Regenerate deliberately with `SCENIMEFY_WRITE_GOLDEN=1 pytest tests/test_golden_losses.py`.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scenimefy.config import load_config
from scenimefy.stages.translator import TranslatorNets, build_networks, build_optimizers, translator_step

GOLDEN = Path(__file__).parent / "golden" / "translator_tiny.json"
KEYS = ["loss_D_U", "loss_D_P", "loss_G", "loss_G_gan", "loss_G_gan_p", "loss_src", "loss_hdce", "loss_style_nce"]


def _first_losses(n_steps=4):
    torch.manual_seed(0)
    cfg = load_config("tiny", ["translator.ngf=8", "translator.ndf=8", "translator.num_patches=16", "translator.head_dim=16"])
    modules = build_networks(cfg.translator)
    opts, scheds = build_optimizers(modules, cfg.translator)
    nets = TranslatorNets(**modules, optimizers=opts, schedulers=scheds)
    rows = []
    for step in range(n_steps):
        g = torch.Generator().manual_seed(step)
        x, y, xp, yp = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(4))
        metrics, _ = translator_step(nets, x, y, xp, yp, t=cfg.translator, epoch=1, total_epochs=4, generator=g)
        rows.append({k: metrics[k] for k in KEYS})
    return rows


def test_tiny_translator_reproduces_the_golden_losses():
    rows = _first_losses()
    if os.environ.get("SCENIMEFY_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(rows, indent=1))
    golden = json.loads(GOLDEN.read_text())
    for step, (got, want) in enumerate(zip(rows, golden)):
        for key in KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), f"step {step} {key}"
    assert np.isfinite([r["loss_G"] for r in rows]).all()
