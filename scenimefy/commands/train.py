"""Stage 3: train the photo->anime translator on Ray Train.

    scenimefy train --config paper data.photos=DIR data.anime=DIR data.pairs=DIR
    python jobs/train.py --config rtx3090 data.photos=... data.anime=... data.pairs=...
    scenimefy submit --address http://HEAD:8265 train --config paper run.output_dir=/shared/runs ...

A rerun of the same command (same run.name) resumes from the latest checkpoint.
Ray's and the libraries' own output goes to <output_dir>/<run.name>/logs/run.log; --verbose prints it
instead (module doc of scenimefy.commands.jobs_runner).
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import add_verbose_option, add_workload_options

HELP = "stage 3: train the photo->anime translator on Ray Train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "translator.lambda_src=0.1 run.num_workers=4")
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: the plan's lines. Run: train, print where the results are, return the outcome."""
    if args.dry_run:
        from scenimefy.distributed.cluster import run_dir_of

        return [f"run dir: {run_dir_of(cfg)}"]
    from scenimefy.distributed.translator import train_translator_on_ray

    outcome = train_translator_on_ray(cfg)
    if outcome.resumed_from_step is not None:
        print(f"resumed from step {outcome.resumed_from_step}")
    print(f"generator: {outcome.generator}")
    print(f"checkpoint: {outcome.checkpoint}")
    print(f"mlflow: {outcome.tracking_uri} (run {outcome.mlflow_run_id})")
    return outcome
