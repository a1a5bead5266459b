"""`scenimefy tune`: Ray Tune sweeps over the translator's loss weights and the pair threshold.

    scenimefy tune --config paper --space tuning/paper.yaml tune.name=sweep-1 \\
        data.photos=... data.anime=... evaluate.photos=... tune.manifest=.../manifest.parquet

Rerunning the same command resumes an interrupted sweep. See tuning/README.md.
"""

from __future__ import annotations

import argparse
import json

from scenimefy.config import dump_yaml, load_config


def cmd_tune(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"tune.space={args.space}"] if args.space else [])
    cfg = load_config(args.config, overrides)
    from scenimefy.distributed.tune import run_sweep

    if args.dry_run:
        plan = run_sweep(cfg, dry_run=True)
        print(dump_yaml(cfg), end="")
        print("# sweep:", json.dumps(plan, indent=1, default=str).replace("\n", "\n# "))
        return 0
    outcome = run_sweep(cfg)
    best = outcome.best
    counts = {s: sum(r["status"] == s for r in outcome.table) for s in ("COMPLETED", "STOPPED_EARLY", "ERROR")}
    print(
        f"{len(outcome.table)} trial(s): {counts['COMPLETED']} completed, {counts['STOPPED_EARLY']} stopped early by ASHA, "
        f"{counts['ERROR']} failed" + (" (resumed sweep)" if outcome.resumed else "")
    )
    print(
        f"best trial {best['trial_id']}: {cfg.tune.metric} {best[cfg.tune.metric]:.4f} after {best['epochs']} epoch(s)"
    )
    print(f"best preset: {outcome.best_preset}  (scenimefy train --config {outcome.best_preset})")
    print(f"results: {outcome.results_csv}")
    print(f"plot: {outcome.plot}")
    print(f"mlflow: {outcome.tracking_uri} (parent run {outcome.parent_run_id})")
    return 0


def add_tune_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="Ray Tune sweep of translator trainings (ASHA on FID / L_BCE), resumable",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--space", default="", help="search-space YAML (tuning/*.yaml); same as tune.space=FILE")
    p.add_argument("--config", default=None, help="preset name (paper, rtx3090, tiny) or a YAML file")
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="e.g. tune.num_samples=16 tune.name=sweep-1"
    )
    p.add_argument("--dry-run", action="store_true", help="print the config, the space and the trial plan, then exit")
    p.set_defaults(func=cmd_tune)
