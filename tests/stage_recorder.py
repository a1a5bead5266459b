"""Binds a stage loop's report/latest_checkpoint to memory, as the Ray layer binds them to Ray Train."""

import shutil
import tempfile

from scenimefy.distributed.tracking import MemoryTracker
from scenimefy.stages.context import WorkerContext


class Recorder:
    """Records every report and copies each checkpoint directory it is given."""

    def __init__(self, resume_from=None):
        self.reports, self.checkpoints = [], []
        self.resume_from = resume_from
        self.root = tempfile.mkdtemp(prefix="stage-ckpts-")

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            dst = f"{self.root}/{len(self.checkpoints):03d}"
            shutil.copytree(checkpoint_dir, dst)
            self.checkpoints.append(dst)

    def context(self, tracker=None):
        return WorkerContext(
            report=self.report, latest_checkpoint=lambda: self.resume_from, tracker=tracker or MemoryTracker()
        )
