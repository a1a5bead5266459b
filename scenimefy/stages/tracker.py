"""What a stage loop logs through: the tracker interface, with no-op methods.

The stage layer never imports MLflow: `scenimefy.distributed.tracking.MlflowTracker` implements
this interface on rank 0 of a Ray Train worker group, and tests record into memory.
"""

from __future__ import annotations

import os

import numpy as np


class NullTracker:
    """Logs nothing (ranks other than 0, and loops run without tracking)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...
