"""MLflow tracking, behind a small interface the stage loops call.

Loops receive a tracker object with the interface of `scenimefy.stages.tracker.NullTracker`:
`MlflowTracker` on rank 0, `NullTracker` elsewhere. One MLflow run per run name: a resumed or
retried run appends to the same MLflow run (its id is found by the `scenimefy.run_name` tag).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scenimefy.stages.tracker import NullTracker

RUN_NAME_TAG = "scenimefy.run_name"


def resolve_tracking_uri(configured: str, run_dir: str | os.PathLike) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else a SQLite store under the run directory."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{run_dir / 'mlflow.db'}"


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store live beside its database file.

    MLflow's default for a SQLite store is ./mlruns of whatever directory the process happens
    to run in (a Ray worker's, say); a tracking server or a file store decide for themselves.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :])
    return (db.parent / "mlartifacts").absolute().as_uri()


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def find_or_create_run(
    tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any] | None = None, parent_run_id: str = ""
) -> str:
    """The id of the MLflow run for `run_name` (created on first use, params logged once)."""
    _quiet_env()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=artifact_location_for(tracking_uri))
    )
    found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1)
    if found:
        return found[0].info.run_id
    tags = {RUN_NAME_TAG: run_name, "mlflow.runName": run_name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name, tags=tags)
    if params:
        log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


class MlflowTracker(NullTracker):
    """Logs into an existing MLflow run by id (rank 0 of a Train worker group, or a driver)."""

    def __init__(self, tracking_uri: str, run_id: str):
        _quiet_env()
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if np.isfinite(v)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_image(self, image: np.ndarray, name: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=name)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(text)
            self.client.log_artifact(self.run_id, str(p))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
