"""Fault tolerance, tested on real processes: a Ray head and an MLflow server on loopback.

One `ray start --head` cluster with 2 CPUs and one `mlflow server` serve the module. Each test
sends a tiny translator run (2 workers, a checkpoint every 4 steps, 16 steps; 32 images per set
so one pass of each data stream covers the run, since a new pass re-executes its Ray Dataset)
with `scenimefy submit --follow`, waits until a checkpoint is registered and training has gone
past it, then kills a process with SIGKILL:

- one Ray Train worker: the run must restart its worker group from the latest checkpoint (not
  from step 0) within the same job;
- the job's driver (the process running `jobs/train.py`): the job fails and takes its Train
  controller and workers with it; the same command submitted again resumes from the latest
  checkpoint.

Either way the run may lose at most two checkpoint intervals (Ray Train registers a reported
checkpoint asynchronously, and a worker may run one report ahead of the registration: that
report is lost with the worker), must reach step 16, make the last `submit` exit 0, and leave one
complete MLflow run. Both runs have the same seeds, data and settings (only `run.name` differs),
and resuming is exact, so they end with identical weights.
Every process the module started is stopped, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ray_head import MlflowServer, RayHead, die_with_parent, quiet_env

pytestmark = pytest.mark.ray

TOTAL_STEPS = 16
CHECKPOINT_EVERY = 4
DEADLINE_S = float(
    os.environ.get("SCENIMEFY_FT_DEADLINE_S", "480")
)  # a hang guard for the whole test, not a speed check


def _job_args(root: Path, data: dict[str, str], run_name: str) -> list[str]:
    return [
        "--config", "tiny",
        f"run.output_dir={root / 'out'}", f"run.name={run_name}",
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


def _mlflow_run(client, run_name: str, experiment: str = "scenimefy") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`scenimefy.run_name` = '{run_name}'")


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


def _wait(
    what: str,
    predicate,
    deadline: float,
    submit: subprocess.Popen | None = None,
    log: Path | None = None,
    poll_s: float = 0.5,
):
    """Poll `predicate` until it is truthy (a hang guard: fail at `deadline` or when `submit` exits)."""
    PHASES.append((what, time.monotonic()))
    tail = lambda: log.read_text()[-6000:] if log is not None else ""  # noqa: E731
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if submit is not None and submit.poll() is not None:
            pytest.fail(f"submit exited ({submit.returncode}) while waiting for {what}:\n{tail()}")
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}:\n{tail()}")


@dataclass
class Cluster:
    root: Path
    head: RayHead
    mlflow: MlflowServer
    data: dict[str, str]
    finals: dict[str, str] = field(default_factory=dict)  # run name -> its final checkpoint's state.pt


@pytest.fixture(scope="module")
def cluster():
    from scenimefy.demo.scenes import write_demo_dataset

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="sft", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    head, mlflow_server = RayHead(root, num_cpus=2), MlflowServer(root / "mlflow")
    try:
        # Start the head and the tracking server side by side; draw the data meanwhile.
        head.launch()
        mlflow_server.launch()
        data = write_demo_dataset(str(root / "data"), n_photos=32, n_anime=32, n_pairs=32, n_test=0, size=32, seed=0)
        head.wait_ready(timeout_s=DEADLINE_S)
        mlflow_server.wait_ready(timeout_s=DEADLINE_S)
        print(f"\n[fault tolerance] head + mlflow ready {time.monotonic() - started:.0f} s")
        yield Cluster(root, head, mlflow_server, data)
    finally:
        mlflow_server.stop()
        head.stop()
        leftovers = head.alive_pids()
        shutil.rmtree(root, ignore_errors=True)
    assert mlflow_server.proc.poll() is not None
    assert leftovers == [], f"processes of the test cluster still running: {leftovers}"


def _submit(cluster: Cluster, submission_id: str, run_name: str, log: Path) -> subprocess.Popen:
    """`scenimefy submit --follow` of the tiny run; MLFLOW_TRACKING_URI is forwarded from here."""
    cmd = [
        sys.executable, "-m", "scenimefy.commands.cluster", "submit", "--address", cluster.head.address, "--follow",
        "--submission-id", submission_id,
        "--env", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.2", "--env", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=60",
        "--env", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0", "--env", "RAY_DATA_DISABLE_PROGRESS_BARS=1",
        "train", *_job_args(cluster.root, cluster.data, run_name),
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
            env=quiet_env(MLFLOW_TRACKING_URI=cluster.mlflow.uri), start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip


def _stop(submit: subprocess.Popen | None) -> None:
    if submit is not None and submit.poll() is None:
        os.killpg(submit.pid, signal.SIGKILL)
        submit.wait(timeout=10)


def _finish(submit: subprocess.Popen, log: Path, deadline: float) -> tuple[int, str]:
    try:
        rc = submit.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job did not finish within the deadline:\n{log.read_text()[-6000:]}")
    return rc, log.read_text()


def _past_a_checkpoint(cluster: Cluster, run_name: str, submit, log: Path, deadline: float):
    """Wait until the controller registered a checkpoint and training logged a step past it;
    return (MLflow client, run id, the run's Ray storage)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster.mlflow.uri)
    storage = cluster.root / "out" / "ray" / run_name
    ckpt_step = _wait(
        "the first registered checkpoint",
        lambda: max(_registered_checkpoint_steps(storage), default=0),
        deadline,
        submit,
        log,
    )
    runs = _wait("the MLflow run", lambda: _mlflow_run(client, run_name), deadline, submit, log)
    run_id = runs[0].info.run_id
    _wait(
        f"a step after {ckpt_step}",
        lambda: max(_logged_steps(client, run_id), default=0) > ckpt_step,
        deadline,
        submit,
        log,
    )
    assert max(_logged_steps(client, run_id)) < TOTAL_STEPS, "training finished before the kill: make it longer"
    return client, run_id, storage


def _check_recovered(client, run_id: str, run_name: str, output: str, ckpt_at_kill: int, killed_ms: float) -> int:
    """The final job resumed from the checkpoint registered at the kill, lost at most two intervals,
    finished, and left one complete MLflow run. Returns the step it resumed from."""
    from scenimefy.commands.jobs_runner import parse_result

    result = parse_result(output)
    assert result is not None, output[-6000:]
    assert result["step"] == TOTAL_STEPS
    resumed = result["resumed_from_step"]
    assert resumed is not None, "the run restarted from scratch, not from a checkpoint"
    assert resumed >= ckpt_at_kill >= CHECKPOINT_EVERY and resumed % CHECKPOINT_EVERY == 0
    assert f"resumed from step {resumed}" in output
    reached_before_kill = max(_logged_steps(client, run_id, until_ms=killed_ms + 1000))
    # Ray's report queue is one deep: the worker blocks on its second unregistered report
    assert 0 <= reached_before_kill - resumed <= 2 * CHECKPOINT_EVERY, (reached_before_kill, resumed)

    # MLflow holds one complete run: every step, FINISHED, the generator and the config.
    runs = _mlflow_run(client, run_name)
    assert len(runs) == 1 and runs[0].info.run_id == run_id == result["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["run.num_workers"] == "2"
    assert sorted(set(_logged_steps(client, run_id))) == list(range(1, TOTAL_STEPS + 1))
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"generator.pt", "config.yaml"} <= artifacts
    history = sorted(client.get_metric_history(run_id, "loss_G"), key=lambda m: m.timestamp)
    after_kill = [m.timestamp for m in history if m.timestamp > killed_ms + 1000]
    print(
        f"\n[fault tolerance] {run_name}: killed at checkpoint {ckpt_at_kill}, step {reached_before_kill}; first step "
        f"after the kill +{(after_kill[0] - killed_ms) / 1000:.0f} s, resumed from {resumed}"
    )
    return resumed


def _final_state(result_output: str) -> str:
    from scenimefy.commands.jobs_runner import parse_result

    return str(Path(parse_result(result_output)["checkpoint"]) / "state.pt")


def test_killed_worker_resumes_from_last_checkpoint(cluster):
    started = time.monotonic()
    deadline = started + DEADLINE_S
    PHASES.clear()
    run_name, log = "ft-worker", cluster.root / "submit-worker.log"
    submit = None
    try:
        submit = _submit(cluster, "ft-job", run_name, log)
        client, run_id, storage = _past_a_checkpoint(cluster, run_name, submit, log, deadline)

        # Kill one Ray Train worker process.
        pids = _wait("the Ray Train workers", lambda: _train_worker_pids(cluster.head.address), deadline, submit, log)
        assert len(pids) == 2
        ckpt_at_kill = max(_registered_checkpoint_steps(storage))
        os.kill(pids[-1], signal.SIGKILL)
        killed_ms = time.time() * 1000

        # The job recovers and finishes; `submit` reports SUCCEEDED and exits 0.
        rc, output = _finish(submit, log, deadline)
        assert rc == 0, output[-6000:]
        assert "submitted job ft-job" in output and "job ft-job SUCCEEDED" in output
        assert not os.path.exists(f"/proc/{pids[-1]}")
        _check_recovered(client, run_id, run_name, output, ckpt_at_kill, killed_ms)
        cluster.finals[run_name] = _final_state(output)
    except BaseException:
        print(cluster.head.diagnostics(), file=sys.stderr)
        print("phases: " + ", ".join(f"{what} from {t - started:.0f} s" for what, t in PHASES), file=sys.stderr)
        raise
    finally:
        _stop(submit)


def _driver_pid(address: str, submission_id: str) -> int | None:
    """The pid of a running job's driver process (the job's entrypoint, `python jobs/train.py ...`)."""
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(address).get_job_info(submission_id)
    return int(info.driver_info.pid) if info.driver_info and info.status == "RUNNING" else None


def test_killed_driver_resubmitted_resumes_from_last_checkpoint(cluster):
    started = time.monotonic()
    deadline = started + 2 * DEADLINE_S  # two jobs
    PHASES.clear()
    run_name = "ft-driver"
    logs = [cluster.root / "submit-driver-1.log", cluster.root / "submit-driver-2.log"]
    submit = None
    try:
        submit = _submit(cluster, "ft-driver-1", run_name, logs[0])
        client, run_id, storage = _past_a_checkpoint(cluster, run_name, submit, logs[0], deadline)

        # Kill the job's driver: its Train controller and workers are its actors and end with it.
        driver = _wait(
            "the job's driver", lambda: _driver_pid(cluster.head.address, "ft-driver-1"), deadline, submit, logs[0]
        )
        ckpt_at_kill = max(_registered_checkpoint_steps(storage))
        os.kill(driver, signal.SIGKILL)
        killed_ms = time.time() * 1000
        rc, output = _finish(submit, logs[0], deadline)
        assert rc == 1 and "job ft-driver-1 FAILED" in output, output[-6000:]
        _wait("the killed job's Train workers to end", lambda: not _train_worker_pids(cluster.head.address), deadline)
        assert client.get_run(run_id).info.status == "RUNNING"  # nobody closed it: the next job appends to it

        # The same command, submitted again, resumes from the latest checkpoint and finishes.
        submit = _submit(cluster, "ft-driver-2", run_name, logs[1])
        rc, output = _finish(submit, logs[1], deadline)
        assert rc == 0 and "job ft-driver-2 SUCCEEDED" in output, output[-6000:]
        _check_recovered(client, run_id, run_name, output, ckpt_at_kill, killed_ms)
        cluster.finals[run_name] = _final_state(output)
    except BaseException:
        print(cluster.head.diagnostics(), file=sys.stderr)
        print("phases: " + ", ".join(f"{what} from {t - started:.0f} s" for what, t in PHASES), file=sys.stderr)
        raise
    finally:
        _stop(submit)


def test_both_recovered_runs_end_with_the_weights_of_one_run(cluster):
    """A worker killed at one step, a driver killed at another: both runs resumed exactly, so every
    network, optimiser moment and stream position is identical (torch.equal) at step 16."""
    import torch

    if len(cluster.finals) < 2:
        pytest.skip("needs both recovery tests of this module to have passed")
    worker, driver = (torch.load(cluster.finals[name], weights_only=True) for name in ("ft-worker", "ft-driver"))
    assert worker["progress"] == driver["progress"] and worker["streams"] == driver["streams"]
    differing = [
        f"{net}.{key}"
        for net in worker["models"]
        for key, value in worker["models"][net].items()
        if not torch.equal(value, driver["models"][net][key])
    ]
    assert differing == []


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
