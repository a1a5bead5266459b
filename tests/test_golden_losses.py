"""Golden losses: the first steps of the tiny translator at a fixed seed.

A refactor that should not change numerics must reproduce tests/golden/translator_tiny.json.
Regenerate deliberately with `SCENIMEFY_WRITE_GOLDEN=1 pytest tests/test_golden_losses.py`.

Adam turns last-bit differences of a gradient into lr-sized updates, so after the first
optimiser step the losses depend on which CPU kernels ran (an AVX-512 machine differs from an
AVX2 one by 5e-4 at step 1 and 30% at step 3). The steps therefore run in a child process
pinned to the AVX2 kernels of ATen, oneDNN and MKL and to two threads, the settings the golden
file was written with; the same kernels then give the same numbers to ~1e-6 on any x86 CPU.
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scenimefy.config import load_config
from scenimefy.stages.translator import TranslatorNets, build_networks, build_optimizers, translator_step

GOLDEN = Path(__file__).parent / "golden" / "translator_tiny.json"
KEYS = ["loss_D_U", "loss_D_P", "loss_G", "loss_G_gan", "loss_G_gan_p", "loss_src", "loss_hdce", "loss_style_nce"]
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OMP_NUM_THREADS": "2",
}


def _first_losses(n_steps=4):
    torch.manual_seed(0)
    cfg = load_config(
        "tiny", ["translator.ngf=8", "translator.ndf=8", "translator.num_patches=16", "translator.head_dim=16"]
    )
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


def _first_losses_with_pinned_kernels() -> list[dict]:
    env = {**os.environ, **PINNED_KERNELS}
    out = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the golden file holds x86 AVX2 numerics")
def test_tiny_translator_reproduces_the_golden_losses():
    rows = _first_losses_with_pinned_kernels()
    if os.environ.get("SCENIMEFY_WRITE_GOLDEN"):
        GOLDEN.write_text(json.dumps(rows, indent=1))
    golden = json.loads(GOLDEN.read_text())
    assert len(rows) == len(golden) == 4
    for step, (got, want) in enumerate(zip(rows, golden)):
        for key in KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), f"step {step} {key}"
    assert np.isfinite([r["loss_G"] for r in rows]).all()


def test_first_step_losses_do_not_depend_on_the_cpu_kernels():
    """Before any optimiser step only rounding differs: this process's kernels match the file."""
    got = _first_losses(n_steps=1)[0]
    want = json.loads(GOLDEN.read_text())[0]
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(json.dumps(_first_losses()))
