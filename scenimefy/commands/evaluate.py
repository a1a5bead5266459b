"""`scenimefy evaluate`: FID/KID against the anime set and L_BCE of held-out photos.

    scenimefy evaluate --checkpoint runs/scenimefy-paper/generator.pt --out eval/ \\
        --config paper evaluate.photos=data/test evaluate.anime=data/anime
    scenimefy evaluate --translations results/ --out eval/ evaluate.photos=data/test ...

Writes <out>/report.json (summary and per-image scores) and an MLflow run `<run.name>-eval`.
"""

from __future__ import annotations

import argparse
import math

from scenimefy.config import dump_yaml, load_config


def cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from scenimefy.evaluation.scoring import held_out_photos

        print(dump_yaml(cfg), end="")
        photos = held_out_photos(cfg.evaluate)
        print(f"# held-out photos: {len(photos)} from {cfg.evaluate.photos}")
        print(f"# anime reference: {cfg.evaluate.anime or cfg.data.anime}")
        print(f"# report: {args.out}/report.json")
        return 0
    from scenimefy.distributed.evaluate import evaluate_translator

    outcome = evaluate_translator(
        cfg,
        out_dir=args.out,
        checkpoint=args.checkpoint or "",
        translations=args.translations or "",
        mlflow_run_name=args.name,
    )
    r = outcome.report
    parts = [f"{key} {r[key]:.4f}" for key in ("fid", "kid_mean", "l_bce", "pixel_agreement", "objective") if key in r]
    print(f"evaluated {r['num_translated']} of {r['num_photos']} photo(s): " + ", ".join(parts))
    if r.get("num_unscored"):
        print(f"  {r['num_unscored']} pair(s) could not be scored (unreadable); see the report")
    print(f"report: {outcome.report_path}")
    print(f"translations: {outcome.translations}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return 0 if math.isfinite(r["objective"]) else 1


def add_evaluate_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="FID/KID against the anime set and L_BCE of held-out photos and their translations",
        description=__doc__.splitlines()[0],
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        help="generator to translate evaluate.photos with (generator.pt, checkpoint dir, Shinkai_net_G.pth)",
    )
    source.add_argument(
        "--translations", help="folder of existing translations, matched to evaluate.photos by file stem"
    )
    p.add_argument("--out", required=True, help="output folder: report.json (and translations/ with --checkpoint)")
    p.add_argument("--name", default="", help="MLflow run name (default: <run.name>-eval)")
    p.add_argument("--config", default=None, help="preset name (paper, rtx3090, tiny) or a YAML file")
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="e.g. evaluate.photos=DIR evaluate.max_images=500"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the inputs, then exit")
    p.set_defaults(func=cmd_evaluate)
