"""Binds a stage loop's report/latest_checkpoint/tracker to memory, as the Ray layer binds them to Ray Train."""

import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

from scenimefy.stages.context import WorkerContext
from scenimefy.stages.tracker import NullTracker


class MemoryTracker(NullTracker):
    """Records every metric, image name, artifact and the final status in lists."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.images: list[str] = []
        self.artifacts: list[str] = []
        self.status = ""

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def log_image(self, image, name):
        self.images.append(name)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(str(path))

    def finish(self, status="FINISHED"):
        self.status = status


class Recorder:
    """Records every report (and whether it came with a checkpoint) and copies each checkpoint directory."""

    def __init__(self, resume_from=None):
        self.reports, self.checkpoints = [], []
        self.with_checkpoint: list[bool] = []  # one per report
        self.resume_from = resume_from
        self.root = tempfile.mkdtemp(prefix="stage-ckpts-")

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))
        self.with_checkpoint.append(bool(checkpoint_dir))
        if checkpoint_dir:
            dst = f"{self.root}/{len(self.checkpoints):03d}"
            shutil.copytree(checkpoint_dir, dst)
            self.checkpoints.append(dst)

    def context(self, tracker=None):
        return WorkerContext(
            report=self.report, latest_checkpoint=lambda: self.resume_from, tracker=tracker or MemoryTracker()
        )


class ArraySource:
    """In-memory `BatchSource` over this rank's slice of arrays, reshuffled per pass like the Ray Data shards."""

    def __init__(
        self, arrays: dict[str, np.ndarray], *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        n = len(next(iter(arrays.values())))
        self.indices = np.arange(n)[rank::world_size]
        self.arrays, self.batch_size, self.seed = arrays, batch_size, seed

    def passes(self, index: int) -> Iterator[dict[str, np.ndarray]]:
        order = np.random.default_rng([self.seed, index]).permutation(self.indices)
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield {k: v[rows] for k, v in self.arrays.items()}
