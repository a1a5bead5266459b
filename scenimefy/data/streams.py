"""Endless, resumable batch streams for the training loop.

The translator samples three independent streams: photos x, anime y and pseudo pairs
(x^p, y^p) (unaligned sampling, docs/method.md). Each stream cycles over its source, reshuffled on
every pass with a seed derived from (seed, pass). A stream's position is two integers
(pass, batches taken in that pass), saved in checkpoints so a resumed run continues where it
stopped instead of restarting the pass.

A `BatchSource` is anything with `passes(index) -> iterable of dict batches`: the Ray Data
shard adapter lives in `scenimefy.distributed.data`; the stage tests use an in-memory one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np


class BatchSource(Protocol):
    def passes(self, index: int) -> Iterable[dict[str, np.ndarray]]:
        """Batches of pass `index` (a full shuffled pass over this worker's shard)."""


@dataclass
class StreamPosition:
    pass_index: int = 0
    batches_in_pass: int = 0


class Stream:
    """Cycles a BatchSource forever; `position` says where it is (for checkpoints)."""

    def __init__(self, source: BatchSource, name: str, position: StreamPosition | None = None):
        self.source, self.name = source, name
        self.position = position or StreamPosition()
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _open(self) -> None:
        self._it = iter(self.source.passes(self.position.pass_index))
        for _ in range(self.position.batches_in_pass):  # resume inside a pass
            if next(self._it, None) is None:
                break

    def next(self) -> dict[str, np.ndarray]:
        if self._it is None:
            self._open()
        for _attempt in range(2):
            batch = next(self._it, None)
            if batch is not None:
                self.position.batches_in_pass += 1
                return batch
            self.position = StreamPosition(self.position.pass_index + 1, 0)
            self._open()
        raise ValueError(
            f"the {self.name!r} data shard of this worker yields no full batch: it holds fewer images than "
            "batch_size_per_worker; add images or lower translator.batch_size_per_worker / run.num_workers"
        )
