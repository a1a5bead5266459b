"""Starting or joining a Ray cluster, paths every worker can use, and the Ray Train worker binding."""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scenimefy.data.images import atomic_path

# Ray Train 2.60 turns a worker's print into a log record and, when sys.stdout is wrapped (it is
# in our workers), also prints it: every progress line reached the driver twice. Print as is.
TRAIN_PRINT_AS_IS = ("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def quiet_env() -> None:
    """Offline/CI hygiene for Ray and MLflow (set before `import ray` where possible)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    os.environ.setdefault(*TRAIN_PRINT_AS_IS)


def init_ray(*, num_cpus_needed: float = 0) -> None:
    """Join the cluster named by RAY_ADDRESS (or a job's cluster), else start a local one.

    A local cluster gets at least `num_cpus_needed` logical CPUs, so Train workers plus Ray
    Data tasks never starve each other on a small machine (docs/ray.md). It runs the dashboard:
    Ray Train's placement-group cleaner polls the State API behind it (without it the cleaner
    prints a warning every few seconds and cannot free a stopped run's resources), and users
    get the dashboard at http://127.0.0.1:8265.
    """
    quiet_env()
    # Ray Data lists a folder with 8 threads by default; our folders hold a few Parquet files, and
    # the threaded lister's completion thread can die with an InterruptedError traceback when its
    # dataset finishes first (each epoch). One thread lists sequentially, with no such thread (a local
    # cluster's workers inherit the setting).
    os.environ.setdefault("RAY_DATA_LIST_FILES_THREADED_NUM_WORKERS", "1")
    import ray

    from scenimefy.distributed.logs import attach_to_ray

    if ray.is_initialized():
        attach_to_ray()  # inside a quiet run (scenimefy.distributed.logs): worker lines to its log file
        return
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init(log_to_driver=True)
        attach_to_ray()
        return
    # Ray's default authentication stays as it is (token auth for a new local cluster, the token
    # kept in ~/.ray/auth_token): a local run does not switch it off.
    cpus = max(os.cpu_count() or 1, int(num_cpus_needed + 0.999) + 1)
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=torch.cuda.device_count(),
        include_dashboard=True,
        log_to_driver=True,
    )
    attach_to_ray()


def local_path(path: str) -> str:
    """Absolute local path (Ray Train changes each worker's working directory)."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().absolute())


def ddp_kwargs() -> dict:
    """No buffer sync: our buffers are constant blur kernels (docs/ray.md)."""
    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


# Ray versions whose Train report loggers `quiet_train_reports` knows (they are private to Ray Train).
QUIET_REPORTS_RAY_VERSIONS = ("2.60.",)
_quiet_reports_warned = False


def quiet_train_reports() -> None:
    """Ray Train 2.60 logs every report twice at INFO from each worker ("Reporting training result
    N: TrainingReport(... every metric ...)", "Checkpoint successfully created at ..."); our
    loop prints its own progress line, so those records go to warnings only.

    Ray has no public switch for them: this is the one place that touches Ray Train's private
    modules. On a Ray version it was not written for it warns once and leaves the loggers alone.
    """
    global _quiet_reports_warned
    import ray

    try:
        if not ray.__version__.startswith(QUIET_REPORTS_RAY_VERSIONS):
            raise ImportError(f"written for Ray {', '.join(QUIET_REPORTS_RAY_VERSIONS)}x")
        from ray.train.v2._internal.execution import context, storage
    except ImportError as e:
        if not _quiet_reports_warned:
            _quiet_reports_warned = True
            logging.getLogger(__name__).warning(
                "Ray %s: Ray Train's per-report log records stay at INFO (%s)", ray.__version__, e
            )
        return
    for name in (context.__file__, storage.__name__):  # context.py names its logger by its file path
        logging.getLogger(name).setLevel(logging.WARNING)


# The MLflow trackers `ray_worker_context` made in this worker process: `stage_worker` closes them
# when the training function ends (sending what they buffered, or keeping it in the run folder).
_WORKER_TRACKERS: list = []

# A worker's return value that stands for a deterministic failure (`NonFiniteLoss`): the training
# function returns it instead of raising, so Ray Train does not restart the group to fail again.
FAILED_KEY = "scenimefy_failed"


def stage_worker(worker: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """`worker` as a Ray Train training function: a `NonFiniteLoss` (raised on every rank together)
    ends it with ``{FAILED_KEY: message}``, which `fit_or_fail` turns into a one-line error; Ray
    Train restarts a worker group on any exception, and a restart would only fail the same way.
    Trackers the worker opened are closed either way."""
    from scenimefy.stages.context import NonFiniteLoss

    def train_fn(config: dict) -> Any:
        try:
            return worker(config)
        except NonFiniteLoss as e:
            return {FAILED_KEY: str(e)}
        finally:
            while _WORKER_TRACKERS:
                _WORKER_TRACKERS.pop().close()

    return train_fn


def ray_worker_context(cfg, *, tracking_uri: str, mlflow_run_id: str, **extra):
    """A Ray Train worker's `WorkerContext`: report/checkpoint/DDP bound to Ray Train, MLflow on rank 0.

    The stage loops only see these callables (scenimefy.stages.context); `extra` sets the
    other fields (e.g. `evaluate`).
    """
    import ray.train
    import ray.train.torch

    from scenimefy.distributed.tracking import MlflowTracker
    from scenimefy.stages.context import CheckpointRef, WorkerContext
    from scenimefy.stages.tracker import NullTracker

    quiet_train_reports()
    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    use_cuda = cfg.run.use_gpu and torch.cuda.is_available()
    device = ray.train.torch.get_device() if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    def report(metrics: dict, checkpoint_dir: str | None = None) -> str | None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        if checkpoint is None:
            return None
        stored = ray.train.get_checkpoint()  # after a report with a checkpoint: where Ray stored it
        return stored.path if stored is not None else None

    def latest_checkpoint() -> str | None:
        found = ray.train.get_checkpoint()
        return checkpoint_folder(found, rank) if found is not None else None

    def kept_checkpoints() -> list:
        return [CheckpointRef(c.path, lambda c=c: checkpoint_folder(c, rank)) for c in kept_checkpoints_newest_first()]

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, move_to_device=False, parallel_strategy_kwargs=ddp_kwargs())

    tracker = NullTracker()
    if rank == 0:  # what it cannot send waits in the run directory (closed by `torch_trainer`'s wrapper)
        tracker = MlflowTracker(tracking_uri, mlflow_run_id, spill_dir=run_dir_of(cfg))
        _WORKER_TRACKERS.append(tracker)
    return WorkerContext(
        rank=rank,
        world_size=world,
        device=device,
        report=report,
        latest_checkpoint=latest_checkpoint,
        kept_checkpoints=kept_checkpoints,
        wrap_ddp=wrap,
        tracker=tracker,
        **extra,
    )


def kept_checkpoints_newest_first() -> list:
    """The run's checkpoints Ray Train keeps (registered, so never one whose report did not
    complete), newest first by their reported ``step``, then by report order.

    `ray.train.get_all_reported_checkpoints` lists what the controller registered, restored from
    its snapshot after a restart; should it fail, the latest checkpoint alone.
    """
    import ray.train

    try:
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=60
        )
    except Exception as e:  # an older controller: resume from the latest one only
        logging.getLogger(__name__).warning("cannot list the kept checkpoints (%s); using the latest only", e)
        latest = ray.train.get_checkpoint()
        return [latest] if latest is not None else []
    ordered = sorted(
        enumerate(reported),
        key=lambda item: (float((item[1].metrics or {}).get("step", -1.0)), item[0]),
        reverse=True,
    )
    return [r.checkpoint for _, r in ordered]


def checkpoint_folder(checkpoint, rank: int) -> str:
    """A local folder holding a Ray Train checkpoint, private to this worker's reading.

    On a local filesystem (or NFS mounted on every node) that is the checkpoint's own folder:
    nothing is copied. From remote storage each worker downloads its own copy (removed when the
    worker exits). Not `checkpoint.to_directory()`: every rank gets the same Checkpoint object,
    so they share its one temporary folder, and a rank that downloads late rewrites the files
    another rank is reading ("PytorchStreamReader failed reading file data/N" on resume).
    """
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    folder = tempfile.mkdtemp(prefix=f"scenimefy-resume-rank{rank}-")
    atexit.register(shutil.rmtree, folder, True)
    return checkpoint.to_directory(folder)


def run_dir_of(cfg) -> Path:
    """`<output_dir>/<run.name>`; the name is one plain component and the output dir a local path."""
    from scenimefy.config import check_output_dir, check_run_name

    return Path(local_path(check_output_dir(cfg.run.output_dir))) / check_run_name(cfg.run.name)


def storage_path_of(cfg) -> str:
    """Ray Train/Tune storage: `<output_dir>/ray` on the local or shared (NFS, EFS) path."""
    from scenimefy.config import check_output_dir

    return local_path(check_output_dir(cfg.run.output_dir)).rstrip("/") + "/ray"


def fit_or_fail(trainer, tracker, what: str):
    """`trainer.fit()`; on failure the MLflow run is marked FAILED and a user error made one line."""
    try:
        result = trainer.fit()
    except Exception as e:
        tracker.finish("FAILED")
        raise user_error_from(e) from e
    failed = result.return_value.get(FAILED_KEY) if isinstance(result.return_value, dict) else None
    if failed:
        tracker.finish("FAILED")
        raise ValueError(failed)
    if result.checkpoint is None:
        tracker.finish("FAILED")
        raise RuntimeError(f"{what} finished without a checkpoint")
    return result


def user_error_from(error: Exception) -> Exception:
    """A worker's ValueError (a user error: bad data, conflicting resume) as a plain ValueError.

    Ray wraps worker exceptions; the CLI prints ValueErrors as one line, so unwrap them here.
    Anything else is returned unchanged (a bug keeps its traceback).
    """
    failures = getattr(error, "worker_failures", None) or {}
    for failure in failures.values():
        cause = getattr(failure, "cause", None) or failure  # RayTaskError keeps the original as .cause
        if isinstance(cause, ValueError):
            lines = str(cause).strip().splitlines()
            return ValueError(lines[-1] if lines else repr(cause))
    return error


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` through `atomic_path`: a reader sees the old file or the whole new one."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def ingest_options():
    """The execution options of the training datasets' shards: the current DataContext's resource
    limits and progress setting, built without the deprecated `exclude_resources` (which Ray Train's
    own default passes and Ray Data then warns about), and with `preserve_order`.

    Ray Train splits each dataset with `streaming_split`, whose coordinator hands every block to
    the worker that has received the fewest rows so far, in the order blocks arrive. Without
    `preserve_order` they arrive in the order their read tasks finish, so for a dataset of more
    than one block a worker's images would depend on timing (differ between two runs, or between a
    run and its resume); with it the shards depend on the data alone."""
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=True,
        verbose_progress=current.verbose_progress,
    )


def torch_trainer(
    worker: Callable[[dict], Any],
    cfg,
    *,
    name: str,
    train_loop_config: dict,
    datasets: dict,
    keep_checkpoints: int,
    callbacks: list | None = None,
):
    """The TorchTrainer of a stage run, built the same way for every stage.

    `run.num_workers` DDP workers (gloo on CPU, nccl with run.use_gpu), `run.cpus_per_worker`
    CPUs and, with run.use_gpu, one GPU each; the Ray run `name` under `storage_path_of(cfg)`
    (a rerun with the same name resumes it), its latest `keep_checkpoints` checkpoints kept, up
    to `run.max_failures` worker-group restarts (none for a non-finite loss: `stage_worker`),
    and every dataset split across the workers.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cfg.run.cpus_per_worker}
    if cfg.run.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        stage_worker(worker),
        train_loop_config=train_loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.run.num_workers, use_gpu=cfg.run.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path_of(cfg),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=callbacks or [],
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split="all", execution_options=ingest_options()),
    )
