"""`scenimefy pairs` (stage 2 on Ray) and `scenimefy select` (a new threshold over a manifest).

    scenimefy pairs --config paper pairs.source_checkpoint=lhq-220000.pt pairs.target_checkpoint=shinkai-221000.pt
    scenimefy pairs --config paper --target-kept 30000 ...
    scenimefy select --manifest runs/scenimefy-paper/pairs/manifest.parquet --threshold 4.8 --out pairs-4.8/

`pairs` writes <output_dir>/<run.name>/pairs/ (candidates, manifest.parquet, selected/trainA|trainB)
and an MLflow run `<run.name>-pairs`; `select` reads the stored scores only (no segmentation).
"""

from __future__ import annotations

import argparse

from scenimefy.config import PairsConfig, dump_yaml, load_config


def cmd_pairs(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.target_kept is not None:
        overrides += [f"pairs.target_kept={args.target_kept}", "pairs.num_candidates=0"]
    cfg = load_config(args.config, overrides)
    from scenimefy.distributed.pairs import describe_plan, validate_pairs_config

    validate_pairs_config(cfg)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        for line in describe_plan(cfg):
            print("# " + line.replace("\n", "\n# "))
        return 0
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    out = generate_and_select_on_ray(cfg)
    print(
        f"kept {out.num_kept} of {out.num_candidates} candidate(s) (keep rate {out.keep_rate:.1%}); "
        f"{out.num_exported} pair(s) in {out.pairs_dir}"
    )
    print(f"manifest: {out.manifest}")
    print(f"inspection: {out.inspection}")
    print(f"mlflow: {out.tracking_uri} (run {out.mlflow_run_id})")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from scenimefy.stages.pairs import materialize_selection

    result = materialize_selection(
        args.manifest, threshold=args.threshold, min_classes=args.min_classes, out_dir=args.out, limit=args.limit
    )
    print(
        f"kept {result['kept']} of {result['candidates']} candidate(s) at L_BCE < {result['threshold']} and "
        f">= {result['min_classes']} classes (keep rate {result['keep_rate']:.1%}); "
        f"{result['exported']} pair(s) in {result['out_dir']} (trainA/, trainB/)"
    )
    return 0


def add_pairs_commands(subparsers: argparse._SubParsersAction) -> None:
    defaults = PairsConfig()
    p = subparsers.add_parser(
        "pairs",
        help="stage 2: generate pseudo pairs with G_s/G_t and keep the semantically consistent ones (Ray Data)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", default="paper", help="preset name (paper, rtx3090, tiny) or a YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="e.g. pairs.bce_threshold=4.9 pairs.segmenter_actors=2",
    )
    p.add_argument("--target-kept", type=int, default=None, metavar="K",
                   help="stream seeds until K pairs are kept (sets pairs.target_kept=K and pairs.num_candidates=0)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then exit")
    p.set_defaults(func=cmd_pairs)

    s = subparsers.add_parser(
        "select",
        help="re-select pairs from a stage-2 manifest at another threshold (no segmentation)",
        description="Export the pairs a threshold keeps, from the stored candidates and scores.",
    )
    s.add_argument("--manifest", required=True, help="manifest.parquet (or the stage folder holding it)")
    s.add_argument("--threshold", type=float, default=defaults.bce_threshold, help="keep pairs with L_BCE below this")
    s.add_argument(
        "--min-classes", type=int, default=defaults.min_classes, help="... whose photo shows at least this many classes"
    )
    s.add_argument("--out", required=True, help="output folder: trainA/ and trainB/ (replaced atomically)")
    s.add_argument("--limit", type=int, default=0, help="export only the first N kept pairs by seed (0: all)")
    s.set_defaults(func=cmd_select)
