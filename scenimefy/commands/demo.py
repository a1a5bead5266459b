"""The end-to-end demo: stages 0-3 on procedural scenes with tiny priors (CPU, a few minutes).

    scenimefy demo --out scenimefy-demo
    python jobs/demo.py --out /shared/demo --workers 2
    scenimefy submit --address http://HEAD:8265 demo --out /shared/demo

Ray's and the libraries' own output goes to <out>/logs/run.log; --verbose prints it instead.
It takes no --config: its settings are the `tiny` preset with the demo's own changes
(scenimefy/demo/run.py); overrides go on top of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scenimefy.commands.options import add_verbose_option, add_workload_options

HELP = "stages 0-3 on procedural demo data (tiny preset, CPU, a few minutes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "translator.n_epochs=2", config=False)
    p.add_argument(
        "--out",
        default="scenimefy-demo",
        metavar="DIR",
        help="where data, runs and pictures go; a folder the demo creates gets a .gitignore of * (absolute on a "
        "cluster; default: %(default)s, in the current directory)",
    )
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (default: %(default)s)")
    p.add_argument(
        "--photos",
        default="",
        metavar="DIR",
        help="a folder of real photos to translate with the demo's generator too, shown in before_after_photos.png "
        "(default: none)",
    )
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: where it writes and with how many workers. Run: the demo; returns its paths."""
    out = str(Path(args.out).absolute())
    if args.dry_run:
        log = "the terminal (--verbose)" if args.verbose else str(Path(out) / "logs" / "run.log")
        return [f"out: {out}", f"workers: {args.workers}", f"Ray's and the libraries' output: {log}"]
    from scenimefy.demo.run import run_demo

    photos = str(Path(args.photos).absolute()) if args.photos else ""
    return run_demo(out_dir=out, overrides=args.overrides, workers=args.workers, verbose=args.verbose, photos=photos)
