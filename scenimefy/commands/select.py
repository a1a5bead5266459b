"""Re-select stage-2 pairs at another threshold from the stored candidates and scores (no segmentation).

scenimefy select --manifest runs/scenimefy-paper/pairs/manifest.parquet --threshold 4.8 --out pairs-4.8/
"""

from __future__ import annotations

import argparse

from scenimefy.config import PairsConfig

HELP = "re-select pairs from a stage-2 manifest at another threshold (no segmentation)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = PairsConfig()
    p.add_argument("--manifest", required=True, help="manifest.parquet (or the stage folder holding it)")
    p.add_argument(
        "--threshold",
        type=float,
        default=defaults.bce_threshold,
        help="keep pairs with L_BCE below this (default: %(default)s, pairs.bce_threshold's)",
    )
    p.add_argument(
        "--min-classes",
        type=int,
        default=defaults.min_classes,
        help="... whose photo shows at least this many classes (default: %(default)s, pairs.min_classes')",
    )
    p.add_argument("--out", required=True, help="output folder: trainA/ and trainB/ (replaced atomically)")
    p.add_argument("--limit", type=int, default=0, help="export only the first N kept pairs by seed (default: 0, all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scenimefy.stages.pair_manifest import materialize_selection

    result = materialize_selection(
        args.manifest, threshold=args.threshold, min_classes=args.min_classes, out_dir=args.out, limit=args.limit
    )
    print(
        f"kept {result['kept']} of {result['candidates']} candidate(s) at L_BCE < {result['threshold']} and "
        f">= {result['min_classes']} classes (keep rate {result['keep_rate']:.1%}); "
        f"{result['exported']} pair(s) in {result['out_dir']} (trainA/, trainB/)"
    )
    return 0
