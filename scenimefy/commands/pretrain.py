"""Stage 0: pretrain StyleGAN2 on real scene photos (the source generator G_s) on Ray Train.

    scenimefy pretrain --config paper data.photos=DIR
    python jobs/pretrain.py --config rtx3090 data.photos=DIR

The final snapshot is in rosinality's format (lhq-220000.pt style), the input of stage 1.
Ray's and the libraries' own output goes to <output_dir>/<run.name>/logs/run.log; --verbose prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import add_verbose_option, add_workload_options

HELP = "stage 0: pretrain StyleGAN2 on scene photos (G_s) on Ray Train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "pretrain.total_kimg=100 data.photos=/data/lhq")
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: check the data, the plan's lines (batch, paths). Run: train, return the outcome."""
    return run_stylegan_stage("pretrain", cfg, args)


def run_stylegan_stage(stage: str, cfg: Any, args: argparse.Namespace) -> Any:
    """Stage 0 or 1 (`stage`: "pretrain" or "finetune"). Dry run: the preflight's lines (data, batch, source).
    Run: train on Ray, print where the snapshot, checkpoint and MLflow run are, return the outcome."""
    from scenimefy.distributed import stylegan

    if args.dry_run:
        info = stylegan.preflight(cfg, stage)  # resolves the data, the batch and (stage 1) the source
        return [f"{key}: {value}" for key, value in info.items() if key != "world size"]  # the entry prints that
    train = {stylegan.PRETRAIN: stylegan.pretrain_on_ray, stylegan.FINETUNE: stylegan.finetune_on_ray}[stage]
    outcome = train(cfg)
    if outcome.resumed_from_step is not None:
        print(f"resumed from step {outcome.resumed_from_step}")
    print(f"snapshot: {outcome.snapshot}")
    print(f"checkpoint: {outcome.checkpoint}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return outcome
