"""The one entry behind every workload: `scenimefy <workload> ...` and `python jobs/<workload>.py ...`.

Both build the same parser (`build_parser`) and run the same function (`run_parsed`), so the
same command line works

- on a cluster, as `ray job submit --working-dir . -- python jobs/train.py --config paper ...`
  or `scenimefy submit --address http://HEAD:8265 train --config paper ...` (the driver then
  joins the job's cluster),
- on one machine, as `scenimefy train --config rtx3090 ...` or `python jobs/train.py ...`
  (a local Ray starts).

A workload is one entry of the closed dict `WORKLOADS`: its command module
(`scenimefy/commands/<workload>.py`: `add_arguments(parser)` and `run(cfg, args)`), the driver
module that does the work (imported only when the workload runs, so a stage whose driver is not
in this checkout fails with a message naming it instead of breaking the others) and the GPUs a
run needs. Before a GPU run starts, the cluster's GPUs are compared with that (`check_gpus`), so a
GPU preset on a CPU-only cluster fails at once instead of waiting forever for resources.

On success the last line printed is `SCENIMEFY_RESULT {json}`: the workload's outcome (paths,
final step, MLflow run id), for scripts that read job logs (`parse_result`). An interrupted run
(Ctrl-C) ends with one line: what was saved and the command that resumes it (`interrupted_line`).

Quiet runs: the terminal gets our own lines (a few per stage, the summary), and Ray's and the
libraries' output goes to `<run folder>/logs/run.log` (`log_file_of`; the run folder is
`<run.output_dir>/<run.name>`, the sweep's folder for `tune`, `--out` for `evaluate`), through
`scenimefy.distributed.logs.quiet_run`. The log file is made only once the run has passed its
checks (when Ray starts, or when a run that never starts Ray succeeds), so a refused run creates
nothing; the first line says where it goes. `--verbose` leaves the output as Ray prints it, and so
does a run that is the driver of a Ray job (`ray job submit`, `scenimefy submit`, a KubeRay RayJob):
there the job's logs are the user's only view of the run, so they keep everything. The one-line
error of a refused or failed run, a bug's traceback and the interrupted-run line are printed after
the quiet run has ended, on the terminal; a Ray this run started is shut down before that, so its
shutdown lines go to the log file too and `SCENIMEFY_RESULT` stays the last line on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

from scenimefy.commands import demo, evaluate, finetune, pairs, pipeline, pretrain, train, tune
from scenimefy.commands.options import OneLineParser
from scenimefy.config import Config, ConfigError, dump_yaml, load_config

RESULT_PREFIX = "SCENIMEFY_RESULT "
LOG_FILE = Path("logs") / "run.log"  # under the run folder: Ray's and the libraries' output of a quiet run
# Set by Ray's job supervisor in the environment of a job's driver (the entrypoint process) only.
RAY_JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class WorkloadUnavailable(ValueError):
    """The workload's driver module is not part of this checkout (yet)."""


class NotEnoughGpus(ValueError):
    """The cluster has fewer GPUs than the run needs, and autoscaling was not allowed."""


# ----------------------------------------------------------------------------------------
# Workloads


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


def _run_dir(cfg: Config, args: argparse.Namespace) -> Path:
    """`<run.output_dir>/<run.name>`, where the stages write."""
    from scenimefy.distributed.cluster import run_dir_of

    return run_dir_of(cfg)


def _sweep_dir(cfg: Config, args: argparse.Namespace) -> Path:
    """`<run.output_dir>/<tune.name>`, where the sweep writes."""
    from scenimefy.distributed.tune.plan import sweep_dir_of

    return sweep_dir_of(cfg)


def _evaluate_out(cfg: Config, args: argparse.Namespace) -> Path:
    """`--out`, where the report goes."""
    return Path(args.out).absolute()


@dataclass(frozen=True)
class Workload:
    command: ModuleType  # scenimefy/commands/<name>.py: HELP, add_arguments(parser), run(cfg, args)
    driver: str  # the module that does the work (for the "not in this checkout" message)
    gpus_needed: Callable[[Config], float]  # GPUs the run needs at once when run.use_gpu is true
    uses_config: bool = True  # False: the demo, which builds its own settings from `tiny`
    succeeded: Callable[[Any], bool] | None = None  # a finished run whose outcome is a failure exits 1
    # The run's folder: its quiet run logs to <folder>/logs/run.log. None: the workload runs its own (the demo).
    run_folder: Callable[[Config, argparse.Namespace], Path] | None = _run_dir

    @property
    def help(self) -> str:
        return self.command.HELP


WORKLOADS: dict[str, Workload] = {
    "pretrain": Workload(pretrain, "scenimefy.distributed.stylegan", _workers_gpus),
    "finetune": Workload(finetune, "scenimefy.distributed.stylegan", _workers_gpus),
    "pairs": Workload(pairs, "scenimefy.distributed.pairs", _pairs_gpus),
    "train": Workload(train, "scenimefy.distributed.translator", _workers_gpus),
    "tune": Workload(tune, "scenimefy.distributed.tune", _workers_gpus, run_folder=_sweep_dir),
    "evaluate": Workload(
        evaluate, "scenimefy.distributed.evaluate", _no_gpus, succeeded=evaluate.succeeded, run_folder=_evaluate_out
    ),
    "pipeline": Workload(pipeline, "scenimefy.distributed.pipeline", _pipeline_gpus),
    "demo": Workload(demo, "scenimefy.demo.run", _no_gpus, uses_config=False, run_folder=None),
}


def workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise WorkloadUnavailable(f"unknown workload {name!r}: valid workloads are {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def available(name: str) -> bool:
    """Whether the workload's driver module is present in this checkout."""
    try:
        return importlib.util.find_spec(workload(name).driver) is not None
    except ModuleNotFoundError:
        return False


def check_available(name: str) -> None:
    """Fail with the missing module named, listing the workloads that can run now."""
    if not available(name):
        module = workload(name).driver
        ready = ", ".join(n for n in WORKLOADS if available(n))
        raise WorkloadUnavailable(
            f"workload {name!r} needs the module {module}, which this checkout does not have; "
            f"workloads available now: {ready}"
        )


# ----------------------------------------------------------------------------------------
# The parser: one per workload, for `scenimefy <name>`, `jobs/<name>.py` and `scenimefy submit <name>`


def configure(name: str, p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add workload `name`'s arguments to `p`; `args.func(args)` then runs it (`run_parsed`)."""
    workload(name).command.add_arguments(p)
    p.set_defaults(func=functools.partial(run_parsed, name))
    return p


def build_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The workload's parser; usage errors raise ValueError (printed as one line)."""
    w = workload(name)
    p = OneLineParser(
        prog=prog or f"jobs/{name}.py",
        description=w.command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure(name, p)


def parse_job_args(name: str, argv: list[str], prog: str | None = None) -> argparse.Namespace:
    """Parse a workload's arguments (options and overrides in any order); a usage error is a ValueError."""
    return build_parser(name, prog).parse_intermixed_args(argv)


def resolve_config(name: str, args: argparse.Namespace, base_dir: str | Path | None = None) -> Config | None:
    """The run's config (None for the demo). A relative YAML path is read under `base_dir`."""
    overrides = list(args.overrides) + list(getattr(args, "option_overrides", []))
    if not workload(name).uses_config:
        if overrides:
            load_config("tiny", overrides)  # the demo's overrides go onto the tiny preset: check them now
        return None
    config = args.config
    if (
        base_dir is not None
        and (config.endswith((".yaml", ".yml")) or "/" in config)
        and not Path(config).is_absolute()
    ):
        config = str(Path(base_dir) / config)
    return load_config(config, overrides)


# ----------------------------------------------------------------------------------------
# The GPU check


def check_gpus(
    name: str, cfg: Config | None, cluster_gpus: float, *, allow_autoscale: bool, where: str = "the Ray cluster"
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


def check_gpus_in_job(name: str, cfg: Config | None, *, allow_autoscale: bool) -> None:
    """Inside the job (or a local run): count the GPUs of the Ray cluster the run joins (joining it), or
    those a local Ray would get (without starting it: a refused run starts nothing)."""
    if cfg is None or not cfg.run.use_gpu or allow_autoscale or workload(name).gpus_needed(cfg) <= 0:
        return
    import ray

    if not ray.is_initialized() and not (os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID")):
        import torch

        check_gpus(name, cfg, float(torch.cuda.device_count()), allow_autoscale=False)  # init_ray's local num_gpus
        return
    from scenimefy.distributed.cluster import init_ray
    from scenimefy.distributed.logs import log_file_waits

    with log_file_waits():  # the run's log file is made when the workload's own checks have passed too
        init_ray(num_cpus_needed=cfg.run.num_workers * cfg.run.cpus_per_worker + 1)
    check_gpus(name, cfg, float(ray.cluster_resources().get("GPU", 0)), allow_autoscale=False)


# ----------------------------------------------------------------------------------------
# Running


def summarise(outcome: Any) -> dict:
    """A JSON-able summary of a workload's outcome (dataclass, dict or anything else)."""
    if dataclasses.is_dataclass(outcome) and not isinstance(outcome, type):
        outcome = dataclasses.asdict(outcome)
    if isinstance(outcome, dict):
        return json.loads(json.dumps(outcome, default=str))
    return {"result": str(outcome)}


def in_ray_job() -> bool:
    """Whether this process is the driver of a Ray job (its entrypoint, started by Ray's job supervisor)."""
    return RAY_JOB_DRIVER_ENV in os.environ


def log_file_of(name: str, cfg: Config | None, args: argparse.Namespace) -> Path | None:
    """Where a quiet run of workload `name` puts Ray's and the libraries' output: `<run folder>/logs/run.log`;
    None when it prints them (`--verbose`, the driver of a Ray job) or runs its own quiet run (the demo)."""
    w = workload(name)
    if w.run_folder is None or cfg is None or getattr(args, "verbose", False) or in_ray_job():
        return None
    return w.run_folder(cfg, args) / LOG_FILE


def _where_output_goes(name: str, cfg: Config | None, args: argparse.Namespace) -> str:
    """The dry run's line on where Ray's and the libraries' output goes ("" for the demo, which says it)."""
    if workload(name).run_folder is None or cfg is None:
        return ""
    if in_ray_job():
        return "Ray's and the libraries' output: the job's logs (a Ray job's driver prints everything)"
    log = log_file_of(name, cfg, args)
    return f"Ray's and the libraries' output: {log if log is not None else 'the terminal (--verbose)'}"


@contextlib.contextmanager
def quiet_workload(name: str, log_file: Path | None) -> Iterator[None]:
    """Run the block as a quiet run logging to `log_file` (nothing changes when it is None). The log file
    is made once Ray starts or the block succeeds, and the first line then says where it is; a Ray the
    block started is shut down inside it, so that Ray's shutdown lines go to the log file too."""
    if log_file is None:
        yield
        return
    from scenimefy.distributed.logs import quiet_run

    def announce(path: Path) -> None:
        print(f"[{name}] Ray's and the libraries' output goes to {path} (--verbose prints it)", flush=True)

    ray_before = _ray_is_running()
    interrupted = False
    with quiet_run(log_file, defer=True, on_open=announce):
        try:
            yield
        except KeyboardInterrupt:  # Ctrl-C: end at once (a second Ctrl-C must not meet a shutdown)
            interrupted = True
            raise
        finally:
            if not interrupted and not ray_before and _ray_is_running():
                sys.modules["ray"].shutdown()


def _ray_is_running() -> bool:
    ray = sys.modules.get("ray")  # not imported: not running
    return ray is not None and ray.is_initialized()


def run_parsed(name: str, args: argparse.Namespace) -> int:
    """Check and run one workload from its parsed arguments; user errors raise ValueError.

    A dry run prints the resolved config, then `# ` lines: the workload, the world size, the GPUs
    needed, where Ray's and the libraries' output goes and the workload's plan (what its `run`
    returns for args.dry_run); it creates nothing.
    A run is a quiet run (module doc) unless `--verbose` or in a Ray job. It prints the workload's
    summary, the time it took, then `SCENIMEFY_RESULT {json}` as the last line; it returns 0, or 1
    when the workload finished with a failed outcome.
    """
    check_available(name)
    w = workload(name)
    cfg = resolve_config(name, args)
    if args.dry_run:
        plan = w.command.run(cfg, args)  # checks the inputs, before anything is printed
        lines = [f"workload: {name}"]
        if cfg is not None:
            print(dump_yaml(cfg), end="")
            gpus = w.gpus_needed(cfg) if cfg.run.use_gpu else 0
            lines += [f"world size: {cfg.run.num_workers}", f"GPUs needed: {gpus:g}"]
        where = _where_output_goes(name, cfg, args)
        for line in lines + ([where] if where else []) + list(plan):
            print("# " + line.replace("\n", "\n# "))
        sys.stdout.flush()
        return 0
    started = time.perf_counter()
    log_file = log_file_of(name, cfg, args)
    with quiet_workload(name, log_file):
        check_gpus_in_job(name, cfg, allow_autoscale=args.allow_autoscale)
        outcome = w.command.run(cfg, args)
    if w.run_folder is not None:  # the demo prints its own
        print(f"[{name}] finished in {time.perf_counter() - started:.0f} s", flush=True)
    print(RESULT_PREFIX + json.dumps({"workload": name, **summarise(outcome)}, sort_keys=True), flush=True)
    return 0 if w.succeeded is None or w.succeeded(outcome) else 1


# ----------------------------------------------------------------------------------------
# Ctrl-C: what was saved, and how to resume

# The Ray Train runs of each workload, as suffixes of run.name (docs/architecture.md, "Outputs").
RAY_RUN_SUFFIXES = {
    "pretrain": ("-pretrain",),
    "finetune": ("-finetune",),
    "train": ("",),
    "pipeline": ("-pretrain", "-finetune", ""),
}


def latest_checkpoint(run_storage: Path) -> tuple[Path, int | None] | None:
    """The newest complete Ray Train checkpoint folder under `run_storage` (its manifest verifies: the
    one a rerun resumes from) and its step (None when the state cannot be read); None when there is
    none. Ray names them by time."""
    from scenimefy.stages.checkpoint import STATE_FILE, CheckpointUnreadable, verify

    found = sorted(p for p in run_storage.glob("checkpoint_*") if (p / STATE_FILE).is_file())
    for folder in reversed(found):
        try:
            verify(folder)
        except CheckpointUnreadable:  # half-written or damaged: a resume skips it too
            continue
        try:
            import torch

            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
            step = int(state["progress"]["step"])
        except Exception:  # a foreign state file: name the folder without its step
            step = None
        return folder, step
    return None


def saved_summary(name: str, cfg: Config | None, args: argparse.Namespace) -> str:
    """What an interrupted run of workload `name` leaves to resume from, in a few words."""
    if cfg is None:  # the demo
        return f"the finished stages in {Path(args.out).absolute()}"
    if name == "evaluate":
        return "nothing (an evaluation starts over)"
    output_dir = cfg.run.output_dir
    if "://" in output_dir:
        return f"the checkpoints under {output_dir.rstrip('/')}/ray"
    root = Path(output_dir).expanduser().absolute()
    if name == "tune":
        return f"the sweep's state in {root / 'ray' / cfg.tune.name}"
    if name == "pairs":
        return f"the pairs written so far in {root / cfg.run.name / 'pairs'}"
    parts = []
    if name == "pipeline" and (root / cfg.run.name / "pipeline").is_dir():
        parts.append(f"the finished stages' records in {root / cfg.run.name / 'pipeline'}")
    for suffix in RAY_RUN_SUFFIXES[name]:
        found = latest_checkpoint(root / "ray" / f"{cfg.run.name}{suffix}")
        if found is not None:
            folder, step = found
            what = f"the {suffix[1:]} checkpoint" if suffix else "the checkpoint"
            parts.append(f"{what} at step {step} ({folder})" if step is not None else f"{what} {folder}")
    return ", ".join(parts) or "no checkpoint yet (a rerun starts from the beginning)"


def interrupted_line(name: str, argv: list[str], prog: str) -> str:
    """`PROG: interrupted; saved: ...; resume with: COMMAND`, one line (the command is the one that ran)."""
    command = shlex.join([*(["python"] if prog.endswith(".py") else []), *prog.split(), *argv])
    try:
        args = parse_job_args(name, argv, prog)
        saved = saved_summary(name, resolve_config(name, args), args)
    except (ConfigError, ValueError, OSError):
        saved = "nothing"
    return f"{prog}: interrupted; saved: {saved}; resume with: {command}"


def main(name: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """`python jobs/<name>.py` and `scenimefy <name>`: exit 0 on success, 2 on a user error (one line), 1 on a
    failed run or a bug (with its traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    prog = prog or f"jobs/{name}.py"
    try:
        return run_parsed(name, parse_job_args(name, argv, prog))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(interrupted_line(name, list(argv), prog), file=sys.stderr, flush=True)
        return 130


def parse_result(logs: str) -> dict | None:
    """The `SCENIMEFY_RESULT` summary in a job's logs (the last one), or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None
