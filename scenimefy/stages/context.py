"""What a stage's worker loop gets from the cluster, as plain callables.

The loop never imports Ray: `scenimefy.distributed` binds these to `ray.train.report`,
`ray.train.get_checkpoint` and `prepare_model`; tests bind them to in-memory recorders
(the shape of NVlabs' `training_loop(rank, num_gpus, abort_fn, progress_fn)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from scenimefy.stages.tracker import NullTracker


def _no_report(metrics: dict, checkpoint_dir: str | None = None) -> str | None:
    return None


@dataclass(frozen=True)
class CheckpointRef:
    """A kept checkpoint: `name` says where it lives (a path or URI, for messages); `fetch` returns a
    local directory holding it (downloading it first from remote storage)."""

    name: str
    fetch: Callable[[], str]


class NonFiniteLoss(ValueError):
    """A loss (or the weights) became NaN or infinite: a deterministic failure that a restart would
    only repeat, raised on every rank together (`scenimefy.stages.loop.StageLoop`)."""


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # metrics and, from rank 0, an optional checkpoint directory; called by ALL ranks (a barrier
    # under Ray), with or without a checkpoint (scenimefy.stages.loop.report); may return where
    # the checkpoint was stored (for messages)
    report: Callable[[dict, str | None], str | None] = _no_report
    should_stop: Callable[[], bool] = lambda: False
    latest_checkpoint: Callable[[], str | None] = lambda: None  # a local directory to resume from
    # the run's kept checkpoints, newest first (resume falls back through them); None: only
    # `latest_checkpoint` (scenimefy.stages.checkpoint.load_resume_state)
    kept_checkpoints: Callable[[], list[CheckpointRef]] | None = None
    wrap_ddp: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m
    tracker: NullTracker = field(default_factory=NullTracker)  # the interface of scenimefy.stages.tracker
    # rank 0's evaluation of the current generator at an epoch end (FID, L_BCE, ...); None: off
    evaluate: Callable[[torch.nn.Module, int], dict[str, float]] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def mean_across_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (identity without a process group)."""
    if not distributed() or not metrics:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def gather_per_rank(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (one item without a process group)."""
    if not distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def rank_checksums(modules: dict[str, torch.nn.Module]) -> list[float]:
    """One float64 checksum of all parameters per rank (equal on every rank under DDP)."""
    return gather_per_rank(
        sum(float(p.detach().double().abs().sum()) for m in modules.values() for p in m.parameters())
    )


def own_entry(values: list[Any], rank: int) -> Any:
    """This rank's entry of a per-rank list saved by a run of possibly another world size."""
    return values[rank] if rank < len(values) else values[0]


def broadcast_from_main(value: object) -> object:
    """Rank 0's Python object on every rank (identity without a process group)."""
    if not distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def assert_ranks_identical(modules: dict[str, torch.nn.Module]) -> None:
    """Parameters must be bit-identical across ranks at every checkpoint (NVlabs' check)."""
    if not distributed():
        return
    for name, module in modules.items():
        for pname, p in module.state_dict().items():
            if not p.is_floating_point():
                continue
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            differs = torch.tensor([0 if torch.equal(ref, p.detach()) else 1], device=p.device)
            dist.all_reduce(differs)
            if differs.item():
                raise RuntimeError(f"DDP ranks diverged: {name}.{pname} differs from rank 0")
