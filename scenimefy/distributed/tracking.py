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

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
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


# How long one MLflow request may block a training step while the server is unreachable. MLflow's
# own defaults retry for minutes (7 retries, backoff factor 2, 120 s timeout); a user's own
# MLFLOW_HTTP_REQUEST_* environment variables take precedence over these.
BOUNDED_REQUESTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0  # while unreachable: first retry after 2 s, doubling up to 60 s
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
UNSENT_PREFIX = "mlflow-unsent-"  # <spill_dir>/mlflow-unsent-<run id>/: what a tracker could not send


@contextmanager
def _bounded_requests():
    """MLflow requests with few, short retries (the process's own settings restored after)."""
    added = [k for k in BOUNDED_REQUESTS if k not in os.environ]
    os.environ.update({k: BOUNDED_REQUESTS[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def unreachable(error: BaseException) -> bool:
    """Whether an MLflow call failed because the server could not be reached (refused, reset, timed
    out, or answering 502-504), as opposed to a request the server refused."""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError):
            return True
        text = str(seen)
        if "Max retries exceeded" in text or "too many 50" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(error: BaseException) -> str:
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."


class MlflowTracker(NullTracker):
    """Logs into an existing MLflow run by id (rank 0 of a Train worker group, or a driver).

    A resumed run redoes the steps between its last checkpoint and the interruption; their metrics
    are already in the run. So a metric at a step above 0 is logged only when the step is above the
    last step the run had for that key (asked once, at the first request that reaches the server)
    and above the last step this tracker sent for it. Step 0 holds a run's one-off summaries
    (evaluation scores, stage durations), which a rerun replaces.

    An unreachable server does not stop training: metrics (and images, artifacts) are buffered,
    one warning says the server is down, and the buffer is retried at the next log call once a
    backoff (2 s, doubling to 60 s) has passed, each attempt bounded (`BOUNDED_REQUESTS`). A line
    says when the server is back. `close`/`finish` try once more; what still cannot be sent is kept
    under `<spill_dir>/mlflow-unsent-<run id>/` (metrics.jsonl, artifacts/) with a warning giving
    the count, and the next tracker of that run with the same `spill_dir` (a rerun of the same
    run.name) sends it first and removes the folder. Without `spill_dir` the count is reported and
    the points are dropped.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        spill_dir: str | os.PathLike | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        _quiet_env()
        from mlflow.tracking import MlflowClient

        self.client, self.run_id, self.tracking_uri = MlflowClient(tracking_uri), run_id, tracking_uri
        self._logged_through: dict[str, int] | None = None  # per key, the last step in the run (see above)
        self._pending: list[Any] = []  # mlflow Metric entities not sent yet, oldest first
        self._pending_files: list[tuple[Path, str | None]] = []  # (our copy, artifact path) not uploaded yet
        self._staging: Path | None = None  # our folder of artifact copies waiting for the server
        self._clock = clock
        self._down_since: float | None = None
        self._next_try, self._delay = 0.0, RETRY_FIRST_S
        self._spill = Path(spill_dir) / f"{UNSENT_PREFIX}{run_id}" if spill_dir is not None else None
        self._claimed: Path | None = None
        if self._spill is not None:
            self._take_unsent()

    # -- what earlier runs could not send -------------------------------------------------

    def _take_unsent(self) -> None:
        """Queue what an earlier tracker of this run left in the spill folder (renamed first, so one
        tracker takes it)."""
        if not self._spill.is_dir():
            return
        claimed = self._spill.with_name(f".{self._spill.name}.sending-{os.getpid()}")
        try:
            os.rename(self._spill, claimed)
        except OSError:  # another tracker took it
            return
        from mlflow.entities import Metric

        self._claimed = claimed
        metrics_file = claimed / "metrics.jsonl"
        if metrics_file.is_file():
            for line in metrics_file.read_text().splitlines():
                if line.strip():
                    m = json.loads(line)
                    self._pending.append(Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])))
        files = claimed / "artifacts"
        if files.is_dir():
            for p in sorted(q for q in files.rglob("*") if q.is_file()):
                where = p.parent.relative_to(files).as_posix()
                self._pending_files.append((p, None if where == "." else where))
        print(
            f"[mlflow] sending {len(self._pending)} metric point(s) and {len(self._pending_files)} artifact(s) "
            f"that an earlier run could not send (from {self._spill})",
            flush=True,
        )

    # -- sending --------------------------------------------------------------------------

    def _fresh(self, items: list[Any]) -> list[Any]:
        """The items to send: above the last step the run (or this tracker) has per key; step 0 always."""
        done = dict(self._logged_through or {})
        out = []
        for m in items:
            if m.step <= 0 or m.step > done.get(m.key, -1):
                out.append(m)
                if m.step > 0:
                    done[m.key] = m.step
        return out

    def _send(self) -> None:
        if self._logged_through is None:
            self._logged_through = last_logged_steps(self.client, self.run_id)
        self._pending = self._fresh(self._pending)
        while self._pending:
            chunk = self._pending[:MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=chunk)
            del self._pending[: len(chunk)]
            for m in chunk:
                if m.step > 0:
                    self._logged_through[m.key] = max(m.step, self._logged_through.get(m.key, -1))
        while self._pending_files:
            path, artifact_path = self._pending_files[0]
            self.client.log_artifact(self.run_id, str(path), artifact_path)
            self._pending_files.pop(0)
            path.unlink(missing_ok=True)

    def _flush(self, *, force: bool = False) -> bool:
        """Send what is buffered; True when nothing is left. While the server is down, tries only
        once the backoff has passed (or when `force`)."""
        if not self._pending and not self._pending_files:
            return True
        now = self._clock()
        if self._down_since is not None and now < self._next_try and not force:
            return False
        try:
            with _bounded_requests():
                self._send()
        except Exception as e:
            if not unreachable(e):
                raise
            if self._down_since is None:
                self._down_since, self._delay = now, RETRY_FIRST_S
                print(
                    f"[mlflow] warning: the tracking server {self.tracking_uri} is unreachable ({_short(e)}); "
                    "training continues, metrics are buffered and retried",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                self._delay = min(self._delay * 2, RETRY_MAX_S)
            self._next_try = now + self._delay
            return False
        if self._down_since is not None:
            print(
                f"[mlflow] the tracking server {self.tracking_uri} is reachable again after "
                f"{now - self._down_since:.0f} s; the buffered metrics are sent",
                file=sys.stderr,
                flush=True,
            )
            self._down_since = None
        self._release_claimed()
        return True

    def _release_claimed(self) -> None:
        if self._claimed is not None and not self._pending and not self._pending_files:
            shutil.rmtree(self._claimed, ignore_errors=True)
            self._claimed = None

    def _stage_file(self, name: str) -> Path:
        """A new path in our staging folder for an artifact waiting for the server."""
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="scenimefy-mlflow-"))
        folder = Path(tempfile.mkdtemp(dir=self._staging))
        return folder / name

    # -- the tracker interface ------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Metric points and artifacts not sent yet."""
        return len(self._pending) + len(self._pending_files)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items() if np.isfinite(v))
        self._flush()

    def _log_file(
        self, make: Callable[[Path], None], name: str, artifact_path: str | None, direct: Callable[[], None]
    ) -> None:
        """Upload a file: `direct` while the server is up and nothing waits before it, else (or when
        that finds the server unreachable) a copy made by `make` joins the buffer."""
        if self._down_since is None and not self._pending_files:
            try:
                with _bounded_requests():
                    direct()
                return
            except Exception as e:
                if not unreachable(e):
                    raise
        staged = self._stage_file(name)
        make(staged)
        self._pending_files.append((staged, artifact_path))
        self._flush()

    def log_image(self, image: np.ndarray, name: str) -> None:
        from PIL import Image

        folder, base = os.path.split(name)
        self._log_file(
            lambda p: Image.fromarray(np.asarray(image)).save(p),
            base,
            folder or None,
            lambda: self.client.log_image(self.run_id, image, artifact_file=name),
        )

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._log_file(
            lambda p: shutil.copyfile(path, p),
            Path(path).name,
            artifact_path,
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
        )

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(text)
            self.log_artifact(p)

    def close(self) -> None:
        """Send what is buffered (one more try); keep what cannot be sent in the spill folder."""
        if self._flush(force=True):
            self._drop_staging()
            return
        sent_later = self._spill_unsent()
        self._drop_staging()
        print(
            f"[mlflow] warning: the tracking server {self.tracking_uri} is still unreachable: "
            f"{len(self._pending)} metric point(s) and {len(self._pending_files)} artifact(s) were not sent; "
            + (
                f"they are kept in {sent_later}, and a rerun of this run (same run.name) sends them"
                if sent_later
                else "they are dropped"
            ),
            file=sys.stderr,
            flush=True,
        )

    def _spill_unsent(self) -> Path | None:
        if self._spill is None:
            return None
        from scenimefy.data.images import atomic_path

        target = self._spill
        with atomic_path(target) as tmp:
            tmp = Path(tmp)
            tmp.mkdir(parents=True)
            rows = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in self._pending]
            (tmp / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            for path, artifact_path in self._pending_files:
                dst = tmp / "artifacts" / (artifact_path or "") / path.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst)
        if self._claimed is not None:
            shutil.rmtree(self._claimed, ignore_errors=True)
            self._claimed = None
        return target

    def _drop_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def finish(self, status: str = "FINISHED") -> None:
        """`close`, then mark the run `status` (a warning, not an error, when the server is down)."""
        self.close()
        try:
            with _bounded_requests():
                self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            if not unreachable(e):
                raise
            print(
                f"[mlflow] warning: could not mark run {self.run_id} {status}: "
                f"{self.tracking_uri} is unreachable ({_short(e)})",
                file=sys.stderr,
                flush=True,
            )
