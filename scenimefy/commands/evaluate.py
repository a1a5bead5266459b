"""FID/KID against the anime set and L_BCE of held-out photos and their translations.

    scenimefy evaluate --checkpoint runs/scenimefy-paper/generator.pt --out eval/ \\
        --config paper evaluate.photos=data/test evaluate.anime=data/anime
    scenimefy evaluate --translations results/ --out eval/ evaluate.photos=data/test ...
    python jobs/evaluate.py --checkpoint /shared/generator.pt --out /shared/eval evaluate.photos=...

Writes <out>/report.json (summary and per-image scores) and an MLflow run `<run.name>-eval`.
Exits 1 when the objective is not finite (nothing could be scored). Ray's and the libraries' own
output goes to <out>/logs/run.log; --verbose prints it instead.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from scenimefy.commands.options import add_verbose_option, add_workload_options

HELP = "FID/KID against the anime set and L_BCE of held-out photos and their translations"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "evaluate.photos=DIR evaluate.max_images=500")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        help="generator to translate evaluate.photos with (generator.pt, checkpoint dir, Shinkai_net_G.pth)",
    )
    source.add_argument(
        "--translations", help="folder of existing translations, matched to evaluate.photos by file stem"
    )
    p.add_argument(
        "--out", required=True, help="output folder (absolute on a cluster): report.json, translations/ (--checkpoint)"
    )
    p.add_argument("--name", default="", help="MLflow run name (default: <run.name>-eval)")
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: the inputs. Run: translate (or take) and score, print the scores, return the outcome."""
    out = str(Path(args.out).absolute())
    if args.dry_run:
        from scenimefy.evaluation.scoring import held_out_photos

        return [
            f"held-out photos: {len(held_out_photos(cfg.evaluate))} from {cfg.evaluate.photos}",
            f"anime reference: {cfg.evaluate.anime or cfg.data.anime}",
            f"report: {out}/report.json",
        ]
    from scenimefy.distributed.evaluate import evaluate_translator

    outcome = evaluate_translator(
        cfg, out_dir=out, checkpoint=args.checkpoint or "", translations=args.translations or "",
        mlflow_run_name=args.name,
    )  # fmt: skip
    r = outcome.report
    parts = [f"{key} {r[key]:.4f}" for key in ("fid", "kid_mean", "l_bce", "pixel_agreement", "objective") if key in r]
    print(f"evaluated {r['num_translated']} of {r['num_photos']} photo(s): " + ", ".join(parts))
    if r.get("num_unscored"):
        print(f"  {r['num_unscored']} pair(s) could not be scored (unreadable); see the report")
    print(f"report: {outcome.report_path}")
    print(f"translations: {outcome.translations}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return outcome


def succeeded(outcome: Any) -> bool:
    """A finite objective: something was scored."""
    return math.isfinite(outcome.report["objective"])


def add_evaluate_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `evaluate` on another parser's subcommands (the `scenimefy` CLI has its own)."""
    from scenimefy.commands.cli import register

    register(subparsers, "evaluate")
