"""Measure what `scenimefy translate --memory-budget-gib` bounds: the peak memory of translating one photo.

Each case runs in a fresh child process (peak RSS cannot be reset): it builds a random generator,
writes a synthetic photo of the given size, notes its resident memory (the baseline: Python,
PyTorch and the weights), translates the photo with `translate_paths` on the CPU under the budget,
and reports the peak (VmHWM) and the peak above the baseline, which is what the budget bounds.

    python jobs/benchmark_translate_memory.py --size 5000x4000 --budget-gib 1 --ngf 16
    python jobs/benchmark_translate_memory.py --size 2000x1500 --budget-gib 0.5 1 2 --json-out benchmarks/x.jsonl

Prints one JSON line per case (--json-out FILE appends them to a file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(width: int, height: int, budget_gib: float, ngf: int, n_blocks: int, tile_overlap: int) -> dict:
    """One case, in this process: baseline RSS, peak RSS and what the plan chose."""
    import numpy as np
    import torch
    from PIL import Image

    from scenimefy.inference.translate import MemoryPlan, translate_paths
    from scenimefy.models.translator import ResnetGenerator

    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=ngf, n_blocks=n_blocks).eval()
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        photo = Path(d) / "photo.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photo, quality=90)
        plan = MemoryPlan.for_generator(generator, torch.device("cpu"), budget_gib)
        baseline = _status_kib("VmRSS") * 1024
        report = translate_paths(
            generator,
            [str(photo)],
            str(Path(d) / "out"),
            batch_size=4,
            max_side=0,
            tile=0,
            tile_overlap=tile_overlap,
            device="cpu",
            memory_budget_gib=budget_gib,
            progress=False,
        )
        peak = _status_kib("VmHWM") * 1024
    return {
        "size": f"{width}x{height}",
        "megapixels": round(width * height / 1e6, 2),
        "ngf": ngf,
        "n_blocks": n_blocks,
        "budget_gib": budget_gib,
        "tile": plan.tile_for(height, width, overlap=tile_overlap),
        "auto_tiled": bool(report.auto_tiled),
        "baseline_gib": round(baseline / 2**30, 3),
        "peak_gib": round(peak / 2**30, 3),
        "above_baseline_gib": round((peak - baseline) / 2**30, 3),
        "within_budget": peak - baseline <= budget_gib * 2**30,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="5000x4000", metavar="WxH", help="photo size in px (default: %(default)s)")
    p.add_argument("--budget-gib", type=float, nargs="+", default=[1.0], help="budgets in GiB (default: 1)")
    p.add_argument("--ngf", type=int, default=16, help="generator width; the paper's is 64 (default: %(default)s)")
    p.add_argument("--n-blocks", type=int, default=9, help="residual blocks (default: %(default)s, the paper's)")
    p.add_argument("--tile-overlap", type=int, default=32, help="px (default: %(default)s, translate's)")
    p.add_argument("--json-out", default="", help="append the JSON lines to this file (default: print only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        case = measure(width, height, args.budget_gib[0], args.ngf, args.n_blocks, args.tile_overlap)
        print(json.dumps(case), flush=True)
        return 0

    from jobs.benchmarking import append_json_lines, machine_header

    rows = [machine_header()]
    print(json.dumps(rows[0]), flush=True)
    for budget in args.budget_gib:
        child = [sys.executable, __file__, "--child", "--size", args.size, "--budget-gib", str(budget)]
        child += ["--ngf", str(args.ngf), "--n-blocks", str(args.n_blocks), "--tile-overlap", str(args.tile_overlap)]
        out = subprocess.run(child, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    append_json_lines(args.json_out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
