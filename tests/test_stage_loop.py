"""The loop skeleton every stage shares: intervals, the metrics window, reports with and without checkpoints."""

from pathlib import Path

import pytest
from stage_recorder import MemoryTracker, Recorder

from scenimefy.stages.loop import Cadence, MetricsWindow, StageLoop, crossed, report_metrics, window_mean


def test_crossed_fires_once_per_interval_in_steps_and_in_images():
    assert [s for s in range(10) if crossed(s, s + 1, 3)] == [2, 5, 8]  # after steps 3, 6, 9
    # images in global batches of 4, interval 6: 6, 12, 18, 24 fall in (4, 8], (8, 12], (16, 20], (20, 24]
    assert [b for b in range(0, 24, 4) if crossed(b, b + 4, 6)] == [4, 8, 16, 20]
    assert not any(crossed(s, s + 1, 0) for s in range(10))  # 0: never


def test_cadence_decides_each_duty_of_an_iteration():
    cadence = Cadence(
        log_every=2,
        sample_every=4,
        checkpoint_every=5,
        report_at_epoch_ends=True,
        evaluate_every_epochs=2,
        last_epoch=3,
    )
    due = cadence.due(3, 4)
    assert (due.log, due.sample, due.checkpoint, due.report, due.evaluate) == (True, True, False, False, False)
    due = cadence.due(4, 5)
    assert (due.log, due.checkpoint, due.report, due.epoch) == (False, True, True, None)
    due = cadence.due(5, 6, epoch=1)  # an epoch end that is not a checkpoint step: a report alone
    assert (due.checkpoint, due.report, due.evaluate, due.epoch) == (False, True, False, 1)
    assert cadence.due(11, 12, epoch=2).evaluate and cadence.due(17, 18, epoch=3).evaluate  # every 2, and the last
    due = cadence.due(6, 7, last=True)  # the last iteration logs, checkpoints and reports
    assert (due.log, due.checkpoint, due.report) == (True, True, True)
    assert Cadence(checkpoint_every=5, checkpoint_at_epoch_ends=True).due(5, 6, epoch=1).checkpoint


def test_window_averages_each_key_over_the_steps_that_have_it():
    assert window_mean([{"a": 1.0, "r1": 4.0}, {"a": 3.0}]) == {"a": 2.0, "r1": 4.0}
    window = MetricsWindow()
    window.add({"loss": 1.0}, images=4)
    window.add({"loss": 2.0}, images=4)
    stats = window.flush()
    assert stats.means == {"loss": 1.5} and (stats.steps, stats.images) == (2, 8) and stats.seconds > 0
    window.add({"loss": 5.0}, images=4)
    assert window.flush().means == {"loss": 5.0}  # a flush starts a new window


def test_only_a_report_that_closes_an_epoch_carries_the_epoch_and_the_scores():
    logged = {"loss_G": 1.0, "epoch": 2.0, "step": 5.0}
    assert report_metrics(logged, step=5) == {"loss_G": 1.0, "step": 5.0}
    closing = report_metrics(logged, step=6, epoch=2, scores={"fid": 40.0})
    assert closing == {"loss_G": 1.0, "step": 6.0, "fid": 40.0, "epoch": 2.0}


def _run(cadence, steps_per_epoch, epochs):
    """A minimal loop over the shared tail, as a stage runs it, bound to the in-memory recorder."""
    rec, tracker = Recorder(), MemoryTracker()
    loop = StageLoop(rec.context(tracker), cadence)
    written, last = [], {}
    total = steps_per_epoch * epochs
    for step in range(total):
        done = step + 1
        loop.add({"loss": float(done)}, images=2)
        epoch = done // steps_per_epoch if done % steps_per_epoch == 0 else None
        due = loop.due(step, done, epoch=epoch, last=done == total)
        if due.log:
            last = {**loop.flush().means, "step": float(done)}
            loop.log(last, done, f"step {done}")
        if due.report:

            def write(d, done=done):
                Path(d, "state.txt").write_text(str(done))
                written.append(done)

            loop.report(report_metrics(last, step=done, epoch=due.epoch), write if due.checkpoint else None)
    return rec, tracker, written


def test_an_epoch_end_between_checkpoints_reports_without_a_checkpoint():
    # epochs of 3 steps, a checkpoint every 4 steps: epoch 1 ends at step 3, not a checkpoint step
    rec, tracker, written = _run(Cadence(log_every=1, checkpoint_every=4, report_at_epoch_ends=True), 3, 3)
    assert [r["step"] for r in rec.reports] == [3.0, 4.0, 6.0, 8.0, 9.0]
    assert rec.with_checkpoint == [False, True, False, True, True]
    assert written == [4, 8, 9]
    assert [Path(c, "state.txt").read_text() for c in rec.checkpoints] == ["4", "8", "9"]
    assert [r.get("epoch") for r in rec.reports] == [1.0, None, 2.0, None, 3.0]
    assert [s for s, _ in tracker.metrics] == list(range(1, 10))


def test_a_checkpoint_interval_longer_than_the_run_still_reports_every_epoch():
    rec, _, written = _run(Cadence(log_every=2, checkpoint_every=10**6, report_at_epoch_ends=True), 2, 3)
    assert [r["epoch"] for r in rec.reports] == [1.0, 2.0, 3.0]
    assert rec.with_checkpoint == [False, False, True] and written == [6]  # the last iteration checkpoints


def test_without_epoch_reports_a_report_goes_out_only_with_a_checkpoint():
    rec, _, written = _run(Cadence(log_every=1, checkpoint_every=2), 3, 2)  # epoch 1 ends at step 3: no report
    assert [r["step"] for r in rec.reports] == [2.0, 4.0, 6.0] and all(rec.with_checkpoint)
    assert written == [2, 4, 6]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_writes_the_checkpoint_but_every_rank_reports(rank):
    rec = Recorder()
    ctx = rec.context()
    ctx.rank, ctx.world_size = rank, 2
    calls = []
    StageLoop(ctx, Cadence()).report({"step": 1.0}, lambda d: calls.append(d))
    assert rec.reports == [{"step": 1.0}]
    assert rec.with_checkpoint == [rank == 0] and len(calls) == (rank == 0)


def test_the_stage_layer_does_not_import_the_ray_layer():
    import subprocess
    import sys

    modules = "scenimefy.stages.loop, scenimefy.stages.translator, scenimefy.stages.stylegan"
    code = (
        f"import sys, {modules}; bad = sorted(m for m in sys.modules if m.startswith('scenimefy.distributed') "
        "or m.split('.')[0] in ('ray', 'mlflow')); print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the stage layer imports {result.stdout.strip()} {result.stderr[-500:]}"


def test_a_checkpoint_goes_out_sealed_with_its_manifest():
    from scenimefy.stages.checkpoint import MANIFEST_FILE, verify

    rec, _, written = _run(Cadence(checkpoint_every=2), steps_per_epoch=2, epochs=1)
    assert written == [2] and len(rec.checkpoints) == 1
    assert (Path(rec.checkpoints[0]) / MANIFEST_FILE).is_file()
    verify(rec.checkpoints[0])


def test_a_non_finite_loss_stops_the_loop_before_its_duties():
    from scenimefy.stages.context import NonFiniteLoss

    rec, tracker = Recorder(), MemoryTracker()
    loop = StageLoop(rec.context(tracker), Cadence(log_every=10), stage="demo", hint="lower demo.lr")
    loop.add({"loss": 1.0}, images=2, step=1)
    assert not loop.due(0, 1).log  # finite, no duty: nothing happens
    loop.add({"loss_a": 2.0, "loss_b": float("inf"), "total": float("nan")}, images=2, step=2, epoch=1)
    with pytest.raises(NonFiniteLoss) as failed:
        loop.due(1, 2)
    assert str(failed.value) == (
        "demo: non-finite loss at step 2 (epoch 1): loss_b=inf, total=nan; "
        "no checkpoint was written before it; lower demo.lr"
    )


def test_non_finite_weights_block_a_checkpoint_even_when_the_losses_are_finite():
    import torch

    from scenimefy.stages.context import NonFiniteLoss

    net = torch.nn.Linear(2, 2)
    rec = Recorder()
    loop = StageLoop(rec.context(), Cadence(checkpoint_every=1), stage="demo", watch={"G": net}, resumed=(4, "/ck/4"))
    loop.add({"loss": 1.0}, images=2, step=5)
    assert loop.due(4, 5).checkpoint  # finite weights: the checkpoint may be written
    with torch.no_grad():
        net.weight[0, 1] = float("inf")
    loop.add({"loss": 1.0}, images=2, step=6)
    with pytest.raises(NonFiniteLoss, match=r"^demo: the weights of G became non-finite at step 6 .*step 4 at /ck/4"):
        loop.due(5, 6)
