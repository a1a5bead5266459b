"""MLflow down mid-run: a real `mlflow server` on 127.0.0.1 is killed and restarted on the same store and
port while a tracker logs; nothing the server could take once back is lost, and nothing is sent twice."""

import numpy as np
import pytest
from ray_head import MlflowServer

from scenimefy.distributed.tracking import UNSENT_PREFIX, MlflowTracker, find_or_create_run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mlflow = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield mlflow.start(timeout_s=300)
    finally:
        mlflow.stop()


def _restart(server: MlflowServer) -> None:
    server.launch().wait_ready(timeout_s=300)  # the same port and SQLite store (slow on a busy machine)


def _steps(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_an_outage_mid_run_buffers_retries_and_loses_nothing(server, tmp_path, capsys):
    run_id = find_or_create_run(server.uri, "scenimefy", "outage")
    now = [0.0]
    tracker = MlflowTracker(server.uri, run_id, spill_dir=tmp_path, clock=lambda: now[0])
    for step in range(1, 4):
        tracker.log_metrics({"loss": float(step)}, step=step)
    assert tracker.buffered == 0

    server.stop()
    for step in range(4, 9):  # training goes on: every call returns, the points wait
        now[0] += 1.0
        tracker.log_metrics({"loss": float(step), "lr": 0.1}, step=step)
    tracker.log_image(np.full((4, 4, 3), 255, dtype=np.uint8), "samples/step_0000008.png")
    assert tracker.buffered == 11  # 5 loss + 5 lr points, 1 image
    err = capsys.readouterr().err
    assert err.count("is unreachable") == 1 and "training continues" in err  # one warning, not one per call

    _restart(server)
    now[0] += 120.0  # past the backoff: the next call retries
    tracker.log_metrics({"loss": 9.0}, step=9)
    assert tracker.buffered == 0
    err = capsys.readouterr().err
    assert err.count("reachable again") == 1
    tracker.finish()

    client = tracker.client
    assert _steps(client, run_id, "loss") == [(s, float(s)) for s in range(1, 10)]  # each step exactly once
    assert _steps(client, run_id, "lr") == [(s, 0.1) for s in range(4, 9)]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/step_0000008.png"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not list(tmp_path.iterdir())  # nothing left to send later


def test_points_still_unsent_at_the_end_are_kept_and_sent_by_the_next_run(server, tmp_path, capsys):
    run_id = find_or_create_run(server.uri, "scenimefy", "down-at-the-end")
    first = MlflowTracker(server.uri, run_id, spill_dir=tmp_path)
    first.log_metrics({"loss": 1.0}, step=1)
    server.stop()
    try:
        first.log_metrics({"loss": 2.0}, step=2)
        first.log_metrics({"loss": 3.0}, step=3)
        first.log_text("hello\n", "notes.txt")
        first.finish("FINISHED")  # the server is still down: a warning, not an error
        err = capsys.readouterr().err
        kept = tmp_path / f"{UNSENT_PREFIX}{run_id}"
        assert f"2 metric point(s) and 1 artifact(s) were not sent; they are kept in {kept}" in err
        assert len((kept / "metrics.jsonl").read_text().splitlines()) == 2
        assert (kept / "artifacts" / "notes.txt").read_text() == "hello\n"
    finally:
        _restart(server)

    later = MlflowTracker(server.uri, run_id, spill_dir=tmp_path)  # a rerun of the same run.name
    later.log_metrics({"loss": 3.0, "extra": 1.0}, step=3)  # a redone step: sent once, from the kept points
    later.log_metrics({"loss": 4.0}, step=4)
    later.finish()
    client = later.client
    assert _steps(client, run_id, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert _steps(client, run_id, "extra") == [(3, 1.0)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["notes.txt"]
    assert not list(tmp_path.iterdir())  # the kept points were sent and their folder removed


class _OutageAround(MlflowTracker):
    """The real tracker of a training run; the server goes down after step `down_after` is logged and is back
    before step `up_at` is logged (the clock then jumps past the retry backoff)."""

    def __init__(self, server: MlflowServer, *args, down_after: int, up_at: int, **kwargs):
        self.now = [0.0]
        super().__init__(*args, clock=lambda: self.now[0], **kwargs)
        self.server, self.down_after, self.up_at = server, down_after, up_at

    def log_metrics(self, metrics, step):
        if step == self.up_at:
            _restart(self.server)
            self.now[0] += 120.0
        super().log_metrics(metrics, step)
        if step == self.down_after:
            self.server.stop()


def test_a_translator_run_trains_through_an_outage_and_every_logged_step_reaches_the_server(server, tmp_path):
    """A real training loop (the translator stage in-process, tiny sizes) logging through the real tracker."""
    import torch
    from stage_recorder import TINY_TRANSLATOR, Recorder, random_translator_sources

    from scenimefy.config import load_config
    from scenimefy.stages.translator import train_translator

    every_step = ["translator.n_epochs=2", "translator.log_every_steps=1", "translator.checkpoint_every_steps=2"]
    cfg = load_config(None, [*TINY_TRANSLATOR, *every_step])  # 3 epochs of 2 steps
    sources = random_translator_sources()
    run_id = find_or_create_run(server.uri, "scenimefy", "train-through-outage")
    tracker = _OutageAround(server, server.uri, run_id, spill_dir=tmp_path, down_after=2, up_at=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = Recorder()
        train_translator(cfg, sources, 2, rec.context(tracker))
    finally:
        torch.set_num_threads(threads)
        if server.proc is None or server.proc.poll() is not None:  # stopped and not yet back
            _restart(server)
    tracker.finish()

    logged = _steps(tracker.client, run_id, "loss_G")
    assert [s for s, _ in logged] == list(range(1, 7))  # steps 3-4 sent after the outage; none twice
    assert all(np.isfinite(v) for _, v in logged)
    assert rec.checkpoints  # training went on checkpointing through the outage
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    assert not list(tmp_path.iterdir())
