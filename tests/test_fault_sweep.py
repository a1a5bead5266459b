"""A Tune sweep whose trial loses its Ray Train worker: the trial resumes and the sweep finishes.

One trial (a grid of one threshold), 3 epochs of 4 steps, a checkpoint every step, on the local
cluster of `test_tune` (dashboard on, the tiny evaluator bound in every worker). Once the trial's
Train run has a checkpoint on disk, its one RayTrainWorker process is killed with SIGKILL. The
trial's TorchTrainer restarts its worker group (`run.max_failures`=1) from the latest checkpoint,
the trial completes every epoch, and the sweep writes its results.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from ray_head import local_actor_pids
from test_tune import _sweep_cfg, ray_tune, sweep_inputs  # noqa: F401 - the fixtures, shared

pytestmark = pytest.mark.ray

STEPS_PER_EPOCH, EPOCHS = 4, 3
DEADLINE_S = 1200  # a hang guard for the watcher (it also ends with the sweep), not a speed check


def _kill_the_train_worker(trials: Path, seen: dict, stop: threading.Event) -> None:
    """After the first checkpoint on disk: SIGKILL the trial's Train worker, then wait for its replacement."""
    deadline = time.monotonic() + DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        pids = local_actor_pids("RayTrainWorker")
        if "killed" not in seen:
            saved = sorted(trials.glob("ray/*/checkpoint_*/state.pt")) if trials.is_dir() else []
            seen["last_poll"] = {"workers": pids, "checkpoints": len(saved)}
            if saved and pids:
                seen["checkpoints_before_kill"] = len(saved)
                seen["finished_before_kill"] = any(trials.glob("*/generator.pt"))
                os.kill(pids[0], signal.SIGKILL)
                seen["killed"] = pids[0]
        elif [p for p in pids if p != seen["killed"]]:
            seen["replacement"] = [p for p in pids if p != seen["killed"]][0]
            return
        stop.wait(0.05)


def test_a_trial_whose_train_worker_is_killed_resumes_and_the_sweep_finishes(
    ray_tune,  # noqa: F811
    sweep_inputs,  # noqa: F811
    tmp_path,
):
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.tune import run_sweep

    space = tmp_path / "one-trial.yaml"
    space.write_text("pairs.bce_threshold: {grid: [4.5]}\n")
    cfg = _sweep_cfg(
        sweep_inputs,
        tmp_path,
        f"tune.space={space}",
        f"translator.steps_per_epoch={STEPS_PER_EPOCH}",
        "translator.n_epochs=2",
        "translator.n_epochs_decay=1",
        "run.max_failures=1",
    )
    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_kill_the_train_worker, args=(tmp_path / "sweep" / "trials", seen, stop), daemon=True
    )
    watcher.start()
    try:
        out = run_sweep(cfg)
    finally:
        stop.set()
        watcher.join(timeout=30)

    assert "killed" in seen, f"the trial's Train worker was never killed: {seen}"
    assert seen["finished_before_kill"] is False and seen["checkpoints_before_kill"] >= 1
    assert not Path(f"/proc/{seen['killed']}").exists()
    assert "replacement" in seen, "no new Train worker started after the kill"

    # The trial completed every epoch and the sweep wrote its results.
    assert len(out.table) == 1
    row = out.table[0]
    assert row["status"] == "COMPLETED" and row["epochs"] == EPOCHS
    assert Path(row["generator"]).is_file() and Path(out.results_csv).is_file()

    # The trial resumed from a checkpoint, not from step 0: the steps up to the first checkpoint
    # were trained (and logged) once; every step of the run was logged.
    client = MlflowClient(out.tracking_uri)
    children = client.search_runs(
        [client.get_run(out.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'",
    )
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "loss_G")]
    assert sorted(set(steps)) == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert steps.count(1) == 1
    assert client.get_run(out.parent_run_id).info.status == "FINISHED"
