"""Fault tolerance, tested on real processes: a Ray head and an MLflow server on loopback.

`scenimefy submit --follow` sends a tiny translator run (2 workers, a checkpoint every 4
steps, 16 steps; 32 images per set so one pass of each data stream covers the run, since a new
pass re-executes its Ray Dataset) to a `ray start --head` cluster with 2 CPUs. Once a checkpoint is on disk and
training has gone past it, one Ray Train worker process is killed with SIGKILL. The run must
restart its worker group from the latest checkpoint (not from step 0), lose at most two
checkpoint intervals (Ray Train registers a reported checkpoint asynchronously, and a worker
may run one report ahead of the registration: that report is lost with the worker), reach
step 16, make `submit` exit 0, and leave one complete MLflow run.
Every process the test started is stopped, also when it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_head import MlflowServer, RayHead, die_with_parent, quiet_env

pytestmark = pytest.mark.ray

TOTAL_STEPS = 16
CHECKPOINT_EVERY = 4
RUN_NAME = "ft-tiny"
DEADLINE_S = float(
    os.environ.get("SCENIMEFY_FT_DEADLINE_S", "480")
)  # a hang guard for the whole test, not a speed check


def _job_args(root: Path, data: dict[str, str]) -> list[str]:
    return [
        "--config", "tiny",
        f"run.output_dir={root / 'out'}", f"run.name={RUN_NAME}",
        "run.num_workers=2", "run.cpus_per_worker=0.5",  # 1 of the head's 2 CPUs left for Ray Data
        "run.max_failures=2",
        "data.load_size=32", "data.crop_size=32",
        f"data.photos={data['photos']}", f"data.anime={data['anime']}", f"data.pairs={data['pairs']}",
        "translator.ngf=8", "translator.ndf=8",
        "translator.num_patches=16", "translator.head_dim=16", "translator.batch_size_per_worker=1",
        "translator.steps_per_epoch=8", f"translator.max_steps={TOTAL_STEPS}",
        "translator.log_every_steps=1", f"translator.checkpoint_every_steps={CHECKPOINT_EVERY}",
        "translator.sample_every_steps=0",
    ]  # fmt: skip


def _registered_checkpoint_steps(storage: Path) -> list[int]:
    """Steps of the checkpoints Ray Train's controller has registered (its snapshot file).

    A checkpoint folder in storage is not enough: the worker writes it, then queues the report,
    and a worker killed before the controller takes the report restarts without it.
    """
    import json

    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    try:
        snapshot = json.loads((storage / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return []
    return [int(r["metrics"]["step"]) for r in snapshot.get("checkpoint_results", [])]


def _mlflow_run(client, experiment: str = "scenimefy") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`scenimefy.run_name` = '{RUN_NAME}'")


def _logged_steps(client, run_id: str, until_ms: float | None = None) -> list[int]:
    history = client.get_metric_history(run_id, "loss_G")
    return [m.step for m in history if until_ms is None or m.timestamp <= until_ms]


def _train_worker_pids(address: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        address=address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], timeout=20
    )
    return [a.pid for a in actors if a.pid]


PHASES: list[tuple[str, float]] = []  # (what was awaited, seconds since the test started): printed on failure


def _wait(what: str, predicate, deadline: float, submit: subprocess.Popen, log: Path, poll_s: float = 0.5):
    PHASES.append((what, time.monotonic()))
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if submit.poll() is not None:
            pytest.fail(f"submit exited ({submit.returncode}) while waiting for {what}:\n{log.read_text()[-6000:]}")
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-6000:]}")


def test_killed_worker_resumes_from_last_checkpoint():
    from mlflow.tracking import MlflowClient

    from scenimefy.commands.jobs_runner import parse_result
    from scenimefy.demo.scenes import write_demo_dataset

    started = time.monotonic()
    deadline = started + DEADLINE_S
    root = Path(tempfile.mkdtemp(prefix="sft", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    head, mlflow_server = RayHead(root, num_cpus=2), MlflowServer(root / "mlflow")
    submit: subprocess.Popen | None = None
    log = root / "submit.log"
    try:
        # Start the head and the tracking server side by side; draw the data meanwhile.
        head.launch()
        mlflow_server.launch()
        data = write_demo_dataset(str(root / "data"), n_photos=32, n_anime=32, n_pairs=32, n_test=0, size=32, seed=0)
        head.wait_ready(timeout_s=max(deadline - time.monotonic(), 1))
        mlflow_server.wait_ready(timeout_s=max(deadline - time.monotonic(), 1))
        ready_s = time.monotonic() - started

        # Submit through `scenimefy submit --follow`; MLFLOW_TRACKING_URI is forwarded from here.
        cmd = [
            sys.executable, "-m", "scenimefy.commands.cluster", "submit", "--address", head.address, "--follow",
            "--submission-id", "ft-job",
            "--env", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2", "--env", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=60",
            "--env", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0", "--env", "RAY_DATA_DISABLE_PROGRESS_BARS=1",
            "train", *_job_args(root, data),
        ]  # fmt: skip
        submitted_ms = time.time() * 1000
        with open(log, "wb") as out:
            submit = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                env=quiet_env(MLFLOW_TRACKING_URI=mlflow_server.uri), start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        client = MlflowClient(mlflow_server.uri)
        storage = root / "out" / "ray" / RUN_NAME

        # Wait for the controller to register a checkpoint, and for training to go past it.
        ckpt_step = _wait(
            "the first registered checkpoint",
            lambda: max(_registered_checkpoint_steps(storage), default=0),
            deadline,
            submit,
            log,
        )
        runs = _wait("the MLflow run", lambda: _mlflow_run(client), deadline, submit, log)
        run_id = runs[0].info.run_id
        _wait(
            f"a step after {ckpt_step}",
            lambda: max(_logged_steps(client, run_id), default=0) > ckpt_step,
            deadline,
            submit,
            log,
        )
        assert max(_logged_steps(client, run_id)) < TOTAL_STEPS, "training finished before the kill: make it longer"

        # Kill one Ray Train worker process.
        pids = _wait("the Ray Train workers", lambda: _train_worker_pids(head.address), deadline, submit, log)
        assert len(pids) == 2
        ckpt_at_kill = max(_registered_checkpoint_steps(storage))
        os.kill(pids[-1], signal.SIGKILL)
        killed_ms = time.time() * 1000
        killed_s = time.monotonic() - started

        # The job recovers and finishes; `submit` reports SUCCEEDED and exits 0.
        try:
            rc = submit.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job did not finish within the deadline:\n{log.read_text()[-6000:]}")
        output = log.read_text()
        assert rc == 0, output[-6000:]
        assert "submitted job ft-job" in output and "job ft-job SUCCEEDED" in output

        # Resumed from the last registered checkpoint, lost at most two intervals, finished.
        result = parse_result(output)
        assert result is not None, output[-6000:]
        assert result["step"] == TOTAL_STEPS
        resumed = result["resumed_from_step"]
        assert resumed is not None, "the worker group restarted from scratch, not from a checkpoint"
        assert resumed >= ckpt_at_kill >= CHECKPOINT_EVERY and resumed % CHECKPOINT_EVERY == 0
        assert f"resumed from step {resumed}" in output
        reached_before_kill = max(_logged_steps(client, run_id, until_ms=killed_ms + 1000))
        # Ray's report queue is one deep: the worker blocks on its second unregistered report
        assert 0 <= reached_before_kill - resumed <= 2 * CHECKPOINT_EVERY, (reached_before_kill, resumed)
        assert not os.path.exists(f"/proc/{pids[-1]}")

        # MLflow holds one complete run: every step, FINISHED, the generator and the config.
        runs = _mlflow_run(client)
        assert len(runs) == 1 and runs[0].info.run_id == run_id == result["mlflow_run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["run.num_workers"] == "2"
        assert sorted(set(_logged_steps(client, run_id))) == list(range(1, TOTAL_STEPS + 1))
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"generator.pt", "config.yaml"} <= artifacts
        history = sorted(client.get_metric_history(run_id, "loss_G"), key=lambda m: m.timestamp)
        after_kill = [m.timestamp for m in history if m.timestamp > killed_ms + 1000]
        first_s = (history[0].timestamp - submitted_ms) / 1000
        print(
            f"\n[fault tolerance] head + mlflow ready {ready_s:.0f} s; first step {first_s:.0f} s after submit; "
            f"killed at {killed_s:.0f} s (checkpoint {ckpt_at_kill}, step {reached_before_kill}); first step "
            f"after the kill +{(after_kill[0] - killed_ms) / 1000:.0f} s, resumed from {resumed}; done at "
            f"{time.monotonic() - started:.0f} s"
        )
    except BaseException:
        print(head.diagnostics(), file=sys.stderr)
        print("phases: " + ", ".join(f"{what} from {t - started:.0f} s" for what, t in PHASES), file=sys.stderr)
        raise
    finally:
        if submit is not None and submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait(timeout=10)
        mlflow_server.stop()
        head.stop()
        leftovers = head.alive_pids()
        shutil.rmtree(root, ignore_errors=True)
    assert mlflow_server.proc.poll() is not None
    assert leftovers == [], f"processes of the test cluster still running: {leftovers}"


def test_each_rank_reads_its_own_copy_of_a_remote_checkpoint(tmp_path):
    # Ray hands every rank the same Checkpoint; its to_directory() folder is shared, so a rank
    # that downloads late would rewrite the files another rank is loading.
    import pickle

    import pyarrow.fs
    import ray.train

    from scenimefy.distributed.cluster import checkpoint_folder

    (tmp_path / "ckpt").mkdir()
    payload = os.urandom(1 << 16)
    (tmp_path / "ckpt" / "state.pt").write_bytes(payload)
    local = ray.train.Checkpoint(str(tmp_path / "ckpt"))
    assert checkpoint_folder(local, 0) == str(tmp_path / "ckpt")  # read in place, nothing copied

    # A filesystem that is not pyarrow's LocalFileSystem is downloaded, as s3:// or gs:// would be.
    remote = ray.train.Checkpoint(
        "ckpt", filesystem=pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    )
    rank0, rank1 = (pickle.loads(pickle.dumps(remote)) for _ in range(2))
    shared = rank0.to_directory()
    try:
        assert rank1.to_directory() == shared  # Ray's default folder: one for all ranks
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    folders = [checkpoint_folder(rank0, 0), checkpoint_folder(rank1, 1)]
    assert folders[0] != folders[1]
    assert all((Path(f) / "state.pt").read_bytes() == payload for f in folders)
