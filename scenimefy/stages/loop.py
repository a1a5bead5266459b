"""The tail every stage loop shares: what is due after an iteration, the metrics window, reports.

A stage loop (translator, StyleGAN pretraining, fine-tuning) runs its step, then asks its
`Cadence` what this iteration owes: a log line, a sample grid, an evaluation, a checkpoint, a
report. Intervals count steps or images (one unit per loop) and fire when the count crosses a
multiple of them. Reports and checkpoints have their own intervals: every checkpoint goes out
with a report (a checkpoint reaches the cluster only through one), and a report can also go out
without a checkpoint (the translator's epoch results). `report` is a collective: every rank calls
it the same number of times, as Ray Train requires.

Every step's losses are checked for NaN/inf as they are added (they are host floats already);
ranks agree on it at the iterations that owe a duty (a collective every rank calls together), so
a non-finite loss stops every rank at the same iteration with `NonFiniteLoss`, before any log,
sample, evaluation or checkpoint of that iteration; before a checkpoint the weights are checked
too. A checkpoint is therefore never written with non-finite weights, and the run keeps its last
good one.

What a report carries is decided once (`report_metrics`): ``epoch`` and the evaluation scores
appear only in a report that closes an epoch. Tune's ASHA uses ``epoch`` as its clock and skips
results without it or its metric, so a mid-epoch checkpoint never counts as an epoch's result.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from scenimefy.stages.checkpoint import seal
from scenimefy.stages.context import NonFiniteLoss, WorkerContext, distributed, gather_per_rank, mean_across_ranks


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of `every` lies in (before, after]; never for `every` <= 0.

    For steps (after = before + 1) that is ``after % every == 0``; for images it fires once per
    interval whatever the global batch.
    """
    return every > 0 and before // every != after // every


@dataclass(frozen=True)
class Due:
    """What one iteration owes; `epoch` is the epoch it closes (None: not an epoch end)."""

    log: bool = False
    sample: bool = False
    evaluate: bool = False
    checkpoint: bool = False
    report: bool = False
    epoch: int | None = None


@dataclass(frozen=True)
class Cadence:
    """When a loop logs, samples, evaluates, checkpoints and reports (intervals of one unit; 0: never).

    The last iteration (the run finished or is stopping) always logs, checkpoints and reports.
    With `checkpoint_at_epoch_ends` every epoch end checkpoints; with `report_at_epoch_ends` every
    epoch end reports, with a checkpoint only when one is due. Evaluation runs at epoch ends
    every `evaluate_every_epochs` epochs and at `last_epoch`.
    """

    log_every: int = 0
    sample_every: int = 0
    checkpoint_every: int = 0
    checkpoint_at_epoch_ends: bool = False
    report_at_epoch_ends: bool = False
    evaluate_every_epochs: int = 0
    last_epoch: int = 0

    def due(self, before: int, after: int, *, epoch: int | None = None, last: bool = False) -> Due:
        """The duties of the iteration that moved the count from `before` to `after`.

        `epoch`: the epoch this iteration closes, if it closes one; `last`: no iteration follows.
        """
        epoch_end = epoch is not None
        evaluate = (
            epoch_end
            and self.evaluate_every_epochs > 0
            and (epoch % self.evaluate_every_epochs == 0 or epoch == self.last_epoch)
        )
        checkpoint = (
            crossed(before, after, self.checkpoint_every) or last or (epoch_end and self.checkpoint_at_epoch_ends)
        )
        return Due(
            log=crossed(before, after, self.log_every) or last,
            sample=crossed(before, after, self.sample_every),
            evaluate=evaluate,
            checkpoint=checkpoint,
            report=checkpoint or (epoch_end and self.report_at_epoch_ends),
            epoch=epoch,
        )


def window_mean(steps: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the steps that have it (regularisers report at intervals only)."""
    keys = sorted({k for m in steps for k in m})
    return {k: float(np.mean([m[k] for m in steps if k in m])) for k in keys}


@dataclass
class WindowStats:
    """A flushed window: per-key means across steps and ranks, and its wall time and size."""

    means: dict[str, float]
    seconds: float
    steps: int
    images: int


@dataclass
class MetricsWindow:
    """Per-step metrics since the last log line (a collective flush: every rank flushes together)."""

    steps: list[dict[str, float]] = field(default_factory=list)
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, metrics: dict[str, float], images: int) -> None:
        self.steps.append(metrics)
        self.images += images

    def flush(self) -> WindowStats:
        stats = WindowStats(
            means=mean_across_ranks(window_mean(self.steps)),
            seconds=max(time.perf_counter() - self.started, 1e-9),
            steps=len(self.steps),
            images=self.images,
        )
        self.steps, self.images, self.started = [], 0, time.perf_counter()
        return stats


def report_metrics(
    logged: dict[str, float], *, step: int, epoch: int | None = None, scores: dict[str, float] | None = None
) -> dict[str, float]:
    """A report's metrics: the last logged window and ``step``; when the report closes an epoch,
    also ``epoch`` (that epoch) and the latest evaluation ``scores``. Without an epoch neither
    appears: Tune reads only the reports that close an epoch as results."""
    metrics = {k: v for k, v in logged.items() if k != "epoch"}
    metrics["step"] = float(step)
    if epoch is not None:
        metrics.update(scores or {})
        metrics["epoch"] = float(epoch)
    return metrics


def report(ctx: WorkerContext, metrics: dict[str, float], write_checkpoint: Callable[[str], None] | None) -> str | None:
    """One report from every rank (a collective). With `write_checkpoint`, rank 0 writes the
    checkpoint into a fresh temporary directory, seals it (`scenimefy.stages.checkpoint.seal`:
    the manifest last) and sends it with its report; the other ranks report the same metrics
    without one. Returns where the cluster stored the checkpoint, when it says so."""
    if write_checkpoint is None or not ctx.is_main:
        ctx.report(metrics, None)
        return None
    with tempfile.TemporaryDirectory(prefix="scenimefy-ckpt-") as d:
        write_checkpoint(d)
        seal(d)
        return ctx.report(metrics, d)


@dataclass(frozen=True)
class _NonFinite:
    step: int | None
    epoch: int | None
    what: str  # the non-finite terms ("loss_src=nan, loss_G=nan"), or the module whose weights are
    weights: bool = False


class StageLoop:
    """The shared tail of a stage loop: its cadence, its metrics window, logging and reporting.

    `stage` names the loop in messages, `hint` is the advice a non-finite loss ends with, `watch`
    the modules whose weights are checked before each checkpoint, and `resumed` the (step,
    location) of the checkpoint the run resumed from (its last good checkpoint until it writes one).
    """

    def __init__(
        self,
        ctx: WorkerContext,
        cadence: Cadence,
        *,
        stage: str = "stage",
        hint: str = "lower the learning rate",
        watch: dict[str, torch.nn.Module] | None = None,
        resumed: tuple[int, str] | None = None,
    ) -> None:
        self.ctx, self.cadence = ctx, cadence
        self.window = MetricsWindow()
        self.stage, self.hint, self.watch = stage, hint, watch or {}
        self.last_good: tuple[int, str | None] | None = resumed
        self._bad: _NonFinite | None = None  # this rank's first non-finite loss
        self._step: int | None = None

    def add(self, metrics: dict[str, float], images: int, *, step: int | None = None, epoch: int | None = None) -> None:
        """Record one step's metrics (`images`: images the step consumed on all ranks; `step`, `epoch`:
        the step just done and its epoch, for the message should a loss be non-finite)."""
        self.window.add(metrics, images)
        self._step = step
        if self._bad is None and not all(math.isfinite(v) for v in metrics.values()):
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            self._bad = _NonFinite(step, epoch, ", ".join(f"{k}={metrics[k]}" for k in bad))

    def due(self, before: int, after: int, *, epoch: int | None = None, last: bool = False) -> Due:
        """The iteration's duties; raises `NonFiniteLoss` on every rank first when a loss became
        non-finite (or, before a checkpoint, the weights). Without a process group that is checked
        every iteration; with one, at the iterations that owe a duty (the same ones on every rank)."""
        due = self.cadence.due(before, after, epoch=epoch, last=last)
        if distributed():
            if due.log or due.sample or due.evaluate or due.report:
                self._agree_finite(weights=due.checkpoint)
        elif self._bad is not None or due.checkpoint:
            self._agree_finite(weights=due.checkpoint)
        return due

    def _nonfinite_weights(self) -> _NonFinite | None:
        for name, module in self.watch.items():
            params = [p.detach() for p in module.parameters() if p.is_floating_point()]
            if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                return _NonFinite(self._step, None, name, weights=True)
        return None

    def _agree_finite(self, *, weights: bool) -> None:
        found = self._bad or (self._nonfinite_weights() if weights else None)
        per_rank = gather_per_rank(found) if distributed() else [found]
        seen = [f for f in per_rank if f is not None]
        if not seen:
            return
        first = min(seen, key=lambda f: (f.weights, f.step if f.step is not None else math.inf))
        raise NonFiniteLoss(self._message(first))

    def _message(self, bad: _NonFinite) -> str:
        at = f"at step {bad.step}" if bad.step is not None else "during training"
        if bad.epoch is not None:
            at += f" (epoch {bad.epoch})"
        if bad.weights:
            what = f"the weights of {bad.what} became non-finite {at} (the losses were still finite)"
        else:
            what = f"non-finite loss {at}: {bad.what}"
        if self.last_good is None:
            kept = "no checkpoint was written before it"
        else:
            step, where = self.last_good
            kept = f"the last good checkpoint is step {step}" + (f" at {where}" if where else "")
            kept += " (a rerun of the same command resumes from it)"
        return f"{self.stage}: {what}; {kept}; {self.hint}"

    def flush(self) -> WindowStats:
        """The window's means across steps and ranks (all ranks call it together), then a new window."""
        return self.window.flush()

    def log(self, metrics: dict[str, float], step: int, line: str) -> None:
        """Log `metrics` to the tracker at `step` and print `line` on rank 0."""
        self.ctx.tracker.log_metrics(metrics, step=step)
        if self.ctx.is_main:
            print(line, flush=True)

    def report(self, metrics: dict[str, float], write_checkpoint: Callable[[str], None] | None = None) -> None:
        where = report(self.ctx, metrics, write_checkpoint)
        if write_checkpoint is not None:
            self.last_good = (int(metrics.get("step", self._step or 0)), where)
