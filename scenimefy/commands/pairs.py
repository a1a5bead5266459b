"""Stage 2: generate pseudo pairs with G_s/G_t and keep the semantically consistent ones (Ray Data).

    scenimefy pairs --config paper pairs.source_checkpoint=lhq-220000.pt pairs.target_checkpoint=shinkai-221000.pt
    scenimefy pairs --config paper --target-kept 30000 ...
    python jobs/pairs.py --config rtx3090 pairs.source_checkpoint=... pairs.target_checkpoint=...

Writes <output_dir>/<run.name>/pairs/ (candidates, manifest.parquet, selected/trainA|trainB) and an
MLflow run `<run.name>-pairs`. `scenimefy select` re-selects from the manifest at another threshold.
Ray's and the libraries' own output goes to <output_dir>/<run.name>/logs/run.log; --verbose prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

from scenimefy.commands.options import SetsConfig, add_verbose_option, add_workload_options

HELP = "stage 2: generate pseudo pairs with G_s/G_t and keep the semantically consistent ones (Ray Data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_workload_options(p, "pairs.bce_threshold=4.9 pairs.segmenter_actors=2")
    p.add_argument(
        "--target-kept",
        type=int,
        default=None,
        metavar="K",
        action=SetsConfig,
        keys=lambda k: [f"pairs.target_kept={k}", "pairs.num_candidates=0"],
        help="stream seeds until K pairs are kept (sets pairs.target_kept=K and pairs.num_candidates=0; "
        "default: the config's)",
    )
    add_verbose_option(p)


def run(cfg: Any, args: argparse.Namespace) -> Any:
    """Dry run: check the settings, the plan's lines. Run: generate and select, return the outcome."""
    from scenimefy.distributed.pairs import describe_plan, generate_and_select_on_ray, validate_pairs_config

    validate_pairs_config(cfg)
    if args.dry_run:
        return describe_plan(cfg)
    out = generate_and_select_on_ray(cfg)
    print(
        f"kept {out.num_kept} of {out.num_candidates} candidate(s) (keep rate {out.keep_rate:.1%}); "
        f"{out.num_exported} pair(s) in {out.pairs_dir}"
    )
    print(f"manifest: {out.manifest}")
    print(f"inspection: {out.inspection}")
    print(f"mlflow: {out.tracking_uri} (run {out.mlflow_run_id})")
    return out


def add_pairs_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `pairs` and `select` on another parser's subcommands (the `scenimefy` CLI has its own)."""
    from scenimefy.commands.cli import register

    register(subparsers, "pairs")
    register(subparsers, "select")
