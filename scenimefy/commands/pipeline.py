"""Stages 0 -> 1 -> 2 -> 3 from one config, in one driver under one MLflow parent run.

    scenimefy pipeline --config paper data.photos=/data/lhq data.anime=/data/shinkai
    scenimefy pipeline --config paper pairs.source_checkpoint=lhq-220000.pt ...   # G_s given: no stage 0
    scenimefy pipeline --config paper --stages pairs,train ...                    # only these stages
    scenimefy pipeline --config paper --rerun pairs pairs.bce_threshold=4.8 ...   # re-select, then retrain
    python jobs/pipeline.py --config rtx3090 data.photos=... data.anime=...

Each stage's outputs feed the next. A rerun of the same command skips the finished stages (their
records are in <output_dir>/<run.name>/pipeline/) and resumes the interrupted one. Ray's and the
libraries' own output goes to <output_dir>/<run.name>/logs/run.log; --verbose prints it instead.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import SetsConfig, add_verbose_option, add_workload_options

HELP = "stages 0-3 from one config, each stage's outputs feeding the next; finished stages are skipped on rerun"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "pairs.source_checkpoint=lhq-220000.pt")
    p.add_argument(
        "--stages",
        default="",
        metavar="S1,S2",
        action=SetsConfig,
        keys=lambda stages: [f"pipeline.stages={stages}"],
        help="run only these of pretrain,finetune,pairs,train (sets pipeline.stages; default: the config's)",
    )
    p.add_argument(
        "--rerun",
        default="",
        metavar="S1,S2",
        help="run these finished stages' drivers again; they resume from their last checkpoint (default: none)",
    )
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: the plan's lines (which stage runs, on what). Run: the stages, then where their outputs are."""
    from scenimefy.distributed.pipeline import parse_stage_list, plan_pipeline, run_pipeline

    if args.dry_run:
        return plan_pipeline(cfg).describe()
    outcome = run_pipeline(cfg, rerun=parse_stage_list(args.rerun), log=_after_the_checks)
    for result in outcome.stages:
        took = f" in {result.seconds:.0f} s" if result.action == "ran" else ""
        if result.resumed_from_step is not None:
            took += f", resumed from step {result.resumed_from_step}"
        print(f"{result.stage}: {result.action}{took}; record {result.record}")
    for name, path in outcome.outputs.items():
        print(f"{name}: {path}")
    print(f"mlflow: {outcome.tracking_uri} (parent run {outcome.mlflow_run_id})")
    return outcome


def _after_the_checks(line: str) -> None:
    """The pipeline's own lines: it prints the first (its plan) once every planned stage passed its checks,
    so a quiet run's log file is made then, and the line saying where it is comes first."""
    from scenimefy.distributed.logs import checks_passed

    checks_passed()
    print(line, flush=True)
