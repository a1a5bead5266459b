"""Shared fixtures. Ray and MLflow run offline, quietly, and with small timeouts."""

import os

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)

from pathlib import Path

import pytest
from local_ray import init_local_ray
from shared_photos import PHOTOS


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos not found at {PHOTOS}")
    return PHOTOS


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray cluster (4 logical CPUs, no dashboard) for one test module."""
    import ray

    init_local_ray()
    yield
    ray.shutdown()
