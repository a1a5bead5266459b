"""Stage 1: fine-tune G_s into the anime generator G_t on Ray Train.

    scenimefy finetune --config paper data.anime=DIR finetune.source_checkpoint=lhq-220000.pt
    python jobs/finetune.py --config rtx3090 data.anime=DIR finetune.source_checkpoint=...

The final snapshot (rosinality's format) is G_t, the target generator of stage 2.
Ray's and the libraries' own output goes to <output_dir>/<run.name>/logs/run.log; --verbose prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import add_verbose_option, add_workload_options
from scenimefy.commands.pretrain import run_stylegan_stage

HELP = "stage 1: fine-tune G_s into the anime generator G_t on Ray Train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "finetune.source_checkpoint=lhq-220000.pt finetune.iterations=500")
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: check the data and the source, the plan's lines (batch, paths). Run: train, return the outcome."""
    return run_stylegan_stage("finetune", cfg, args)
