"""Ray Tune sweeps over the translator's loss weights and the pair threshold (ASHA on FID / L_BCE).

    scenimefy tune --config paper --space tuning/paper.yaml tune.name=sweep-1 \\
        data.photos=... data.anime=... evaluate.photos=... tune.manifest=.../manifest.parquet
    python jobs/tune.py --config paper --space tuning/paper.yaml ...

Rerunning the same command resumes an interrupted sweep. See tuning/README.md. Ray's and the
libraries' own output goes to <output_dir>/<tune.name>/logs/run.log; --verbose prints it instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from scenimefy.commands.options import SetsConfig, add_verbose_option, add_workload_options

HELP = "Ray Tune sweep of translator trainings (ASHA on FID / L_BCE), resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "tune.num_samples=16 tune.name=sweep-1")
    p.add_argument(
        "--space",
        default="",
        metavar="FILE",
        action=SetsConfig,
        keys=lambda space: [f"tune.space={space}"],
        help="search-space YAML, e.g. tuning/paper.yaml (sets tune.space; default: the config's)",
    )
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: the space and the trial plan. Run: the sweep, then the best trial and where the results are."""
    from scenimefy.distributed.tune import run_sweep

    if args.dry_run:
        return ["sweep: " + json.dumps(run_sweep(cfg, dry_run=True), indent=1, default=str)]
    outcome = run_sweep(cfg)
    best = outcome.best
    counts = {s: sum(r["status"] == s for r in outcome.table) for s in ("COMPLETED", "STOPPED_EARLY", "ERROR")}
    print(
        f"{len(outcome.table)} trial(s): {counts['COMPLETED']} completed, {counts['STOPPED_EARLY']} stopped early by "
        f"ASHA, {counts['ERROR']} failed" + (" (resumed sweep)" if outcome.resumed else "")
    )
    print(
        f"best trial {best['trial_id']}: {cfg.tune.metric} {best[cfg.tune.metric]:.4f} after {best['epochs']} epoch(s)"
    )
    print(f"best preset: {outcome.best_preset}  (scenimefy train --config {outcome.best_preset})")
    print(f"results: {outcome.results_csv}")
    print(f"plot: {outcome.plot}")
    print(f"mlflow: {outcome.tracking_uri} (parent run {outcome.parent_run_id})")
    return outcome


def add_tune_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `tune` on another parser's subcommands (the `scenimefy` CLI has its own)."""
    from scenimefy.commands.cli import register

    register(subparsers, "tune")
