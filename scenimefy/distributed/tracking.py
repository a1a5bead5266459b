"""MLflow tracking, behind a small interface the stage loops call.

Loops receive a tracker object with the interface of `scenimefy.stages.tracker.NullTracker`:
`MlflowTracker` on rank 0, `NullTracker` elsewhere. One MLflow run per run name: a resumed or
retried run appends to the same MLflow run (its id is found by the `scenimefy.run_name` tag), and
does not log a second value for the steps it redoes after its last checkpoint (`MlflowTracker`).

A SQLite store this module creates holds only the experiments it names: MLflow's `Default`
experiment (whose artifacts would go to ./mlruns of the directory the command ran from) becomes
the run's experiment, with its artifacts beside the database (`open_client`).
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
    db = _sqlite_path(tracking_uri)
    return (db.parent / "mlartifacts").absolute().as_uri()


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri[len("sqlite:///") :]) if tracking_uri.startswith("sqlite:///") else None


def open_client(tracking_uri: str, experiment: str) -> Any:
    """An MlflowClient; a SQLite store that does not exist yet is created here with `experiment` as its
    only experiment.

    MLflow creates a `Default` experiment (id 0) in every new store, its artifacts under ./mlruns of
    the current directory. In a store we create, that experiment is renamed to `experiment` and its
    artifacts go to `artifact_location_for(tracking_uri)`, so nothing points at the directory the
    command ran from. Existing stores and tracking servers are left as they are.
    """
    _quiet_env()
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(tracking_uri)
    if db is not None and not db.exists() and experiment != "Default":
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        db.parent.mkdir(parents=True, exist_ok=True)
        store = SqlAlchemyStore(tracking_uri, artifact_location_for(tracking_uri))
        try:
            default = store.get_experiment(SqlAlchemyStore.DEFAULT_EXPERIMENT_ID)
            if default.name == "Default" and store.get_experiment_by_name(experiment) is None:
                store.rename_experiment(default.experiment_id, experiment)
        finally:
            store.engine.dispose()
    return MlflowClient(tracking_uri)


def find_or_create_run(
    tracking_uri: str, experiment: str, run_name: str, params: dict[str, Any] | None = None, parent_run_id: str = ""
) -> str:
    """The id of the MLflow run for `run_name` (created on first use, params logged once)."""
    client = open_client(tracking_uri, experiment)
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


def last_logged_steps(client: Any, run_id: str) -> dict[str, int]:
    """Per metric key, the highest step the run has a value for (one query: MLflow keeps each key's
    latest value, the one at the highest step, with the run)."""
    return {m.key: int(m.step) for m in client.get_run(run_id).data.to_proto().metrics}


class MlflowTracker(NullTracker):
    """Logs into an existing MLflow run by id (rank 0 of a Train worker group, or a driver).

    A resumed run redoes the steps between its last checkpoint and the interruption; their metrics
    are already in the run. So a metric at a step above 0 is logged only when the step is above the
    last step the run had for that key when this tracker first logged (asked once). Step 0 holds a
    run's one-off summaries (evaluation scores, stage durations), which a rerun replaces.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        _quiet_env()
        from mlflow.tracking import MlflowClient

        self.client, self.run_id = MlflowClient(tracking_uri), run_id
        self._logged_through: dict[str, int] | None = None  # per key, the run's last step before this tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        if self._logged_through is None:
            self._logged_through = last_logged_steps(self.client, self.run_id)
        done = self._logged_through
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if np.isfinite(v) and (step <= 0 or step > done.get(k, -1))
        ]
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
