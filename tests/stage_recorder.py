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


# A translator of a few thousand parameters on 32-px crops: two steps per epoch, a checkpoint every step.
TINY_TRANSLATOR = [
    "translator.ngf=8",
    "translator.ndf=8",
    "translator.n_blocks=1",
    "translator.num_patches=8",
    "translator.head_dim=8",
    "translator.batch_size_per_worker=2",
    "translator.n_epochs=1",
    "translator.n_epochs_decay=1",
    "translator.steps_per_epoch=2",
    "translator.log_every_steps=2",
    "translator.sample_every_steps=0",
    "translator.checkpoint_every_steps=1",
    "data.load_size=36",
    "data.crop_size=32",
    "run.num_workers=1",
    "run.torch_threads=1",
]


def random_translator_sources(seed: int = 0, n: int = 8, size: int = 36) -> dict[str, ArraySource]:
    """The translator's three streams (photos, anime, pairs) over random images, batches of 2."""
    rng = np.random.default_rng(seed)

    def images() -> np.ndarray:
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    return {
        "photos": ArraySource({"image": images()}, batch_size=2, seed=1),
        "anime": ArraySource({"image": images()}, batch_size=2, seed=2),
        "pairs": ArraySource({"image_a": images(), "image_b": images()}, batch_size=2, seed=3),
    }
