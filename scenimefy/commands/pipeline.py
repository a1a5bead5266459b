"""`scenimefy pipeline`: stages 0 -> 1 -> 2 -> 3 from one config (scenimefy/distributed/pipeline.py).

    scenimefy pipeline --config paper data.photos=/data/lhq data.anime=/data/shinkai
    scenimefy pipeline --config paper pairs.source_checkpoint=lhq-220000.pt ...   # G_s given: no stage 0
    scenimefy pipeline --config paper --stages pairs,train ...                    # only these stages
    scenimefy pipeline --config paper --rerun pairs pairs.bce_threshold=4.8 ...   # re-select, then retrain

A rerun of the same command skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import argparse

from scenimefy.config import dump_yaml, load_config


def cmd_pipeline(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"pipeline.stages={args.stages}"] if args.stages else [])
    cfg = load_config(args.config, overrides)
    from scenimefy.distributed.pipeline import parse_stage_list, plan_pipeline, run_pipeline

    if args.dry_run:
        plan = plan_pipeline(cfg)
        print(dump_yaml(cfg), end="")
        for line in plan.describe():
            print(f"# {line}")
        return 0
    outcome = run_pipeline(cfg, rerun=parse_stage_list(args.rerun))
    for result in outcome.stages:
        took = f" in {result.seconds:.0f} s" if result.action == "ran" else ""
        print(f"{result.stage}: {result.action}{took}; record {result.record}")
    for name, path in outcome.outputs.items():
        print(f"{name}: {path}")
    print(f"mlflow: {outcome.tracking_uri} (parent run {outcome.mlflow_run_id})")
    return 0


def add_pipeline_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="stages 0-3 from one config, each stage's outputs feeding the next; finished stages are skipped on rerun",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--config", default="paper", help="preset name (paper, rtx3090, tiny) or a YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="config overrides, e.g. pairs.source_checkpoint=lhq-220000.pt",
    )
    p.add_argument(
        "--stages",
        default="",
        metavar="S1,S2",
        help="run only these of pretrain,finetune,pairs,train (sets pipeline.stages)",
    )
    p.add_argument(
        "--rerun",
        default="",
        metavar="S1,S2",
        help="run these finished stages' drivers again (they resume from their last checkpoint)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and which stage runs on what, then exit"
    )
    p.set_defaults(func=cmd_pipeline)
