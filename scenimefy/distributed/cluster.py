"""Starting or joining a Ray cluster, and paths every worker can use."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch


def quiet_env() -> None:
    """Offline/CI hygiene for Ray and MLflow (set before `import ray` where possible)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def init_ray(*, num_cpus_needed: float = 0, include_dashboard: bool | None = False) -> None:
    """Join the cluster named by RAY_ADDRESS (or a job's cluster), else start a local one.

    A local cluster gets at least `num_cpus_needed` logical CPUs, so Train workers plus Ray
    Data tasks never starve each other on a small machine (RAY.md 0.4).
    """
    quiet_env()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init(log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cpus = max(os.cpu_count() or 1, int(num_cpus_needed + 0.999) + 1)
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=torch.cuda.device_count(),
        include_dashboard=include_dashboard,
        log_to_driver=True,
    )


def local_path(path: str) -> str:
    """Absolute local path (Ray Train changes each worker's working directory)."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().absolute())


def ddp_kwargs() -> dict:
    """No buffer sync: our buffers are constant blur kernels (RAY.md 0.5)."""
    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
