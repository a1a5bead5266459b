"""Job entrypoints: `python jobs/<workload>.py --config PRESET [section.key=value ...]`.

One runner behind every file in `jobs/`, so the same command line works

- on a cluster, as `ray job submit --working-dir . -- python jobs/train.py --config paper ...`
  or `scenimefy submit --address http://HEAD:8265 train --config paper ...` (the driver then
  joins the job's cluster),
- on one machine, as plain `python jobs/train.py --config rtx3090 ...` (a local Ray starts).

A workload is one entry of the closed dict `WORKLOADS`; its function is imported only when the
workload runs, so a stage whose module is not in this checkout yet fails with a message naming
the missing module instead of breaking the others. Before a GPU run starts, the cluster's GPUs
are compared with what the run needs (`check_gpus`), so a GPU preset on a CPU-only cluster
fails at once instead of waiting forever for resources.

The last line a job prints is `SCENIMEFY_RESULT {json}`: the workload's outcome (paths, final
step, MLflow run id), for scripts that read job logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from scenimefy.config import Config, ConfigError, dump_yaml, load_config

RESULT_PREFIX = "SCENIMEFY_RESULT "


class WorkloadUnavailable(ValueError):
    """The workload's module is not part of this checkout (yet)."""


class NotEnoughGpus(ValueError):
    """The cluster has fewer GPUs than the run needs, and autoscaling was not allowed."""


# ----------------------------------------------------------------------------------------
# Workloads: each imports its stage function when it runs (explicit imports, no importlib)


def _train(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.translator import train_translator_on_ray

    return train_translator_on_ray(cfg)


def _pretrain(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.stylegan import pretrain_on_ray

    return pretrain_on_ray(cfg)


def _finetune(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.stylegan import finetune_on_ray

    return finetune_on_ray(cfg)


def _pairs(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    return generate_and_select_on_ray(cfg)


def _tune(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.tune import run_sweep

    return run_sweep(cfg)


def _evaluate(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.evaluate import evaluate_translator

    return evaluate_translator(
        cfg, out_dir=str(Path(args.out).absolute()), checkpoint=args.checkpoint or "", translations=args.translations or "",
        mlflow_run_name=args.name,
    )  # fmt: skip


def _pipeline(cfg: Config, args: argparse.Namespace) -> Any:
    from scenimefy.distributed.pipeline import parse_stage_list, run_pipeline

    return run_pipeline(cfg, rerun=parse_stage_list(args.rerun))


def _demo(cfg: Config | None, args: argparse.Namespace) -> Any:
    from scenimefy.demo.run import run_demo

    return run_demo(out_dir=str(Path(args.out).absolute()), overrides=args.overrides, workers=args.workers)


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="", help="search-space YAML (tuning/*.yaml); same as tune.space=FILE")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="generator to translate evaluate.photos with")
    source.add_argument("--translations", help="folder of existing translations, matched to evaluate.photos by stem")
    p.add_argument("--out", required=True, help="output folder (absolute on a cluster): report.json, translations/")
    p.add_argument("--name", default="", help="MLflow run name (default: <run.name>-eval)")


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rerun", default="", metavar="S1,S2", help="run these finished stages' drivers again (they resume)"
    )


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="scenimefy-demo", help="where data, runs and pictures go (absolute on a cluster)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers")


def _workers_gpus(cfg: Config) -> float:
    """Ray Train stages (and one Tune trial): one GPU per worker, all workers at once."""
    return float(cfg.run.num_workers)


def _pairs_gpus(cfg: Config) -> float:
    """Pair generation: at least one actor's GPUs (pools grow as GPUs are free)."""
    return float(cfg.pairs.gpus_per_actor)


def _pipeline_gpus(cfg: Config) -> float:
    """The stages run one after another: the most any one of them needs."""
    return max(_workers_gpus(cfg), _pairs_gpus(cfg))


def _no_gpus(cfg: Config) -> float:
    return 0.0


@dataclass(frozen=True)
class Workload:
    help: str
    module: str  # where the stage function lives (for the "not there yet" message)
    run: Callable[[Config | None, argparse.Namespace], Any]
    gpus_needed: Callable[[Config], float]  # GPUs the run needs at once when run.use_gpu is true
    add_args: Callable[[argparse.ArgumentParser], None] | None = None  # arguments besides --config
    uses_config: bool = True  # False: the demo, which builds its own config from `tiny`


WORKLOADS: dict[str, Workload] = {
    "pretrain": Workload(
        "stage 0: StyleGAN2 on scene photos (G_s)", "scenimefy.distributed.stylegan", _pretrain, _workers_gpus
    ),
    "finetune": Workload(
        "stage 1: G_t fine-tuned on anime scenes", "scenimefy.distributed.stylegan", _finetune, _workers_gpus
    ),
    "pairs": Workload(
        "stage 2: pseudo-pair generation and selection", "scenimefy.distributed.pairs", _pairs, _pairs_gpus
    ),
    "train": Workload(
        "stage 3: the photo->anime translator on Ray Train", "scenimefy.distributed.translator", _train, _workers_gpus
    ),
    "tune": Workload(
        "Ray Tune sweep of translator trainings", "scenimefy.distributed.tune", _tune, _workers_gpus, _tune_args
    ),
    "evaluate": Workload(
        "FID/KID and L_BCE of a generator", "scenimefy.distributed.evaluate", _evaluate, _no_gpus, _evaluate_args
    ),
    "pipeline": Workload(
        "stages 0-3 in one driver, finished stages skipped",
        "scenimefy.distributed.pipeline",
        _pipeline,
        _pipeline_gpus,
        _pipeline_args,
    ),
    "demo": Workload(
        "the pipeline on procedural demo data (CPU, tiny preset)",
        "scenimefy.demo.run",
        _demo,
        _no_gpus,
        _demo_args,
        False,
    ),
}


def workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise WorkloadUnavailable(f"unknown workload {name!r}: valid workloads are {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def available(name: str) -> bool:
    """Whether the workload's module is present in this checkout."""
    try:
        return importlib.util.find_spec(workload(name).module) is not None
    except ModuleNotFoundError:
        return False


def check_available(name: str) -> None:
    """Fail with the missing module named, listing the workloads that can run now."""
    if not available(name):
        w = workload(name)
        ready = ", ".join(n for n in WORKLOADS if available(n))
        path = w.module.replace(".", "/") + ".py"
        raise WorkloadUnavailable(
            f"workload {name!r} needs {path}, which this checkout does not have yet; workloads available now: {ready}"
        )


# ----------------------------------------------------------------------------------------
# Arguments: the same parser checks a job locally (`scenimefy submit`) and runs it in the job


class _JobParser(argparse.ArgumentParser):
    """Usage errors raise ValueError (one line from the CLI), never SystemExit."""

    def error(self, message: str):  # type: ignore[override]
        raise ValueError(message)


def build_parser(name: str) -> argparse.ArgumentParser:
    w = workload(name)
    p = _JobParser(prog=f"jobs/{name}.py", description=w.help)
    if w.uses_config:
        p.add_argument(
            "--config", default="paper", help="preset name (paper, rtx3090, tiny) or a YAML file in the working dir"
        )
    if w.add_args is not None:
        w.add_args(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.add_argument("--allow-autoscale", action="store_true", help="skip the GPU check: GPU workers join on demand")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def parse_job_args(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse a job's arguments; a usage error is a ValueError."""
    return build_parser(name).parse_intermixed_args(argv)


def resolve_config(name: str, args: argparse.Namespace, base_dir: str | Path | None = None) -> Config | None:
    """The job's config (None for the demo). A relative YAML path is read under `base_dir`."""
    if not workload(name).uses_config:
        if args.overrides:
            load_config("tiny", args.overrides)  # the demo's overrides go onto the tiny preset
        return None
    config = args.config
    if (
        base_dir is not None
        and (config.endswith((".yaml", ".yml")) or "/" in config)
        and not Path(config).is_absolute()
    ):
        config = str(Path(base_dir) / config)
    overrides = list(args.overrides) + ([f"tune.space={args.space}"] if getattr(args, "space", "") else [])
    return load_config(config, overrides)


# ----------------------------------------------------------------------------------------
# The GPU check


def check_gpus(
    name: str, cfg: Config, cluster_gpus: float, *, allow_autoscale: bool, where: str = "the Ray cluster"
) -> None:
    """Raise NotEnoughGpus when a GPU run cannot be scheduled on the GPUs the cluster has now."""
    if cfg is None or not cfg.run.use_gpu or allow_autoscale:
        return
    w = workload(name)
    need = w.gpus_needed(cfg)
    if cluster_gpus + 1e-9 < need:
        key, value = (
            ("pairs.gpus_per_actor", cfg.pairs.gpus_per_actor)
            if w.gpus_needed is _pairs_gpus
            else ("run.num_workers", cfg.run.num_workers)
        )
        raise NotEnoughGpus(
            f"{name} with run.use_gpu=true needs {need:g} GPU(s) ({key}={value}) but {where} has {cluster_gpus:g}; "
            f"it would wait forever for resources. Use a GPU cluster, set run.use_gpu=false (CPU), lower {key}, "
            f"or pass --allow-autoscale if GPU workers join on demand"
        )


def check_gpus_in_job(name: str, cfg: Config, *, allow_autoscale: bool) -> None:
    """Inside the job (or a local run): join/start Ray and count the GPUs it has."""
    if cfg is None or not cfg.run.use_gpu or allow_autoscale or workload(name).gpus_needed(cfg) <= 0:
        return
    from scenimefy.distributed.cluster import init_ray

    init_ray(num_cpus_needed=cfg.run.num_workers * cfg.run.cpus_per_worker + 1)
    import ray

    check_gpus(name, cfg, float(ray.cluster_resources().get("GPU", 0)), allow_autoscale=False)


# ----------------------------------------------------------------------------------------
# Running a job


def summarise(outcome: Any) -> dict:
    """A JSON-able summary of a workload's outcome (dataclass, dict or anything else)."""
    if dataclasses.is_dataclass(outcome) and not isinstance(outcome, type):
        outcome = dataclasses.asdict(outcome)
    if isinstance(outcome, dict):
        return json.loads(json.dumps(outcome, default=str))
    return {"result": str(outcome)}


def run_job(name: str, argv: list[str]) -> dict:
    """Parse, check and run one workload; return its summary. User errors raise ValueError."""
    check_available(name)
    args = parse_job_args(name, argv)
    cfg = resolve_config(name, args)
    w = workload(name)
    if args.dry_run:
        if cfg is not None:
            print(dump_yaml(cfg), end="")
            print(
                f"# workload: {name}\n# world size: {cfg.run.num_workers}\n# GPUs needed: {w.gpus_needed(cfg) if cfg.run.use_gpu else 0:g}"
            )
        else:
            print(f"# workload: {name}\n# out: {Path(args.out).absolute()}\n# workers: {args.workers}")
        return {"workload": name, "dry_run": True}
    check_gpus_in_job(name, cfg, allow_autoscale=args.allow_autoscale)
    outcome = w.run(cfg, args)
    return {"workload": name, **summarise(outcome)}


def main(name: str, argv: list[str] | None = None) -> int:
    """The body of `jobs/<name>.py`: exit 0 on success, 2 on a user error (one line), 1 on a bug."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        summary = run_job(name, argv)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"jobs/{name}.py: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"jobs/{name}.py: interrupted", file=sys.stderr, flush=True)
        return 130
    if not summary.get("dry_run"):
        print(RESULT_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    return 0


def parse_result(logs: str) -> dict | None:
    """The `SCENIMEFY_RESULT` summary in a job's logs (the last one), or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None
