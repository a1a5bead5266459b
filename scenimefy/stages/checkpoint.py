"""Checkpoints as plain data (docs/architecture.md, "Checkpoints and resume").

A training checkpoint is a directory: `state.pt` (every state_dict of unwrapped modules,
optimisers, schedulers, progress counters, stream positions, RNG states, the config as a dict
and the package version), `generator.pt` (the inference snapshot) and `config.yaml`. Everything
loads with `torch.load(weights_only=True)`; every file is written atomically.

A checkpoint is complete only when its manifest (`complete.json`: every other file's size and
SHA-256) is present and matches: `seal` writes it last, `verify` checks it. A write killed
half-way (in our writer or in Ray's copy to storage) leaves no manifest or files that do not
match it, so it is never resumed from; `load_resume_state` falls back to the newest kept
checkpoint that verifies and loads (docs/ray.md, "What a run survives").
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from scenimefy import __version__
from scenimefy.data.images import atomic_path
from scenimefy.models.utils import load_weights
from scenimefy.stages.context import CheckpointRef, WorkerContext, broadcast_from_main

STATE_FILE = "state.pt"
TRANSLATOR_SNAPSHOT_FILE = "generator.pt"  # translator inference snapshot (what translate loads)
STYLEGAN_SNAPSHOT_FILE = "stylegan.pt"  # rosinality-format StyleGAN2 export (what stages 1 and 2 load)
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "complete.json"  # written last: the sizes and SHA-256 of every other file
MANIFEST_FORMAT = "scenimefy.checkpoint_manifest"


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The bare module behind DDP and torch.compile wrappers (no `module.`/`_orig_mod.` keys)."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through `atomic_path`: a reader sees the old file or the whole new one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


STATE_EXPECTED = (
    f"a training checkpoint directory holding {STATE_FILE}, the stage's snapshot and {CONFIG_FILE} "
    "(checkpoint_* under <run.output_dir>/ray/<run.name>)"
)


def save_state(directory: str | os.PathLike, state: dict) -> Path:
    state = {"format": "scenimefy.training_state", "version": 1, "package_version": __version__, **state}
    path = Path(directory) / STATE_FILE
    save_torch_atomic(state, path)
    return path


def load_state(directory: str | os.PathLike) -> dict:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"{directory} is not a scenimefy checkpoint: {STATE_FILE} is missing; expected {STATE_EXPECTED}"
        )
    state = load_weights(path, STATE_EXPECTED)
    if not isinstance(state, dict) or state.get("format") != "scenimefy.training_state":
        raise ValueError(f"{path} is not a scenimefy training state; expected {STATE_EXPECTED}")
    return state


class CheckpointUnreadable(ValueError):
    """A checkpoint directory that is incomplete or damaged (the message says which file and why)."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _payload_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(".")
    )


def seal(directory: str | os.PathLike) -> Path:
    """Write the manifest of a finished checkpoint directory, last: from then on it counts as complete."""
    d = Path(directory)
    files = {p.relative_to(d).as_posix(): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in _payload_files(d)}
    path = d / MANIFEST_FILE
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True))
    return path


def verify(directory: str | os.PathLike) -> None:
    """Raise `CheckpointUnreadable` unless every file the manifest lists is there with its size and hash."""
    d = Path(directory)
    manifest = d / MANIFEST_FILE
    try:
        listed = json.loads(manifest.read_text())
        files = listed["files"] if listed.get("format") == MANIFEST_FORMAT else None
    except FileNotFoundError:
        raise CheckpointUnreadable(f"{MANIFEST_FILE} is missing (the write did not finish)") from None
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointUnreadable(f"{MANIFEST_FILE} cannot be read ({type(e).__name__})") from None
    if not isinstance(files, dict) or not files:
        raise CheckpointUnreadable(f"{MANIFEST_FILE} is not a scenimefy checkpoint manifest")
    for name, entry in sorted(files.items()):
        p = d / name
        if not p.is_file():
            raise CheckpointUnreadable(f"{name} is missing")
        size = p.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointUnreadable(f"{name} has {size} bytes, {entry.get('bytes')} were written (truncated?)")
        if _digest(p) != entry.get("sha256"):
            raise CheckpointUnreadable(f"{name} does not match its SHA-256 (damaged)")


def _resume_candidates(ctx: WorkerContext) -> list[CheckpointRef]:
    if ctx.kept_checkpoints is not None:
        return list(ctx.kept_checkpoints())
    latest = ctx.latest_checkpoint()
    return [CheckpointRef(latest, lambda: latest)] if latest is not None else []


def _open_checked(ref: CheckpointRef) -> tuple[str, dict]:
    directory = ref.fetch()
    verify(directory)
    try:
        return directory, load_state(directory)
    except ValueError as e:
        raise CheckpointUnreadable(str(e)) from None


def load_resume_state(ctx: WorkerContext, stage: str) -> tuple[str, dict] | None:
    """The newest kept checkpoint that is complete and loads, as (local directory, state); None: none kept.

    Rank 0 tries the kept checkpoints newest first (`verify`, then `load_state`) and every rank
    takes the one it chose. Skipping a checkpoint prints one warning naming it, why, and the
    checkpoint used instead; when none can be used, a one-line ValueError names them all. A
    usable checkpoint that does not suit the config (another architecture) is the caller's
    error to raise: it is not skipped.
    """
    refs = _resume_candidates(ctx)
    if not refs:
        return None
    chosen, state, problems = -1, None, []
    if ctx.is_main:
        for i, ref in enumerate(refs):
            try:
                directory, state = _open_checked(ref)
            except (CheckpointUnreadable, OSError) as e:
                problems.append(f"{ref.name} ({e})")
                continue
            chosen = i
            break
    chosen, problems = broadcast_from_main((chosen, problems))
    if chosen < 0:
        raise ValueError(
            f"{stage}: none of the {len(refs)} kept checkpoint(s) can be resumed from: {'; '.join(problems)}. "
            "Start a new run.name (the damaged run's checkpoints stay as they are)"
        )
    if state is None:  # the other ranks read the checkpoint rank 0 chose
        directory = refs[chosen].fetch()
        state = load_state(directory)
    if problems and ctx.is_main:
        step = state.get("progress", {}).get("step")
        print(
            f"[{stage}] warning: skipped checkpoint {'; '.join(problems)}; "
            f"resuming from {refs[chosen].name} (step {step}) instead",
            file=sys.stderr,
            flush=True,
        )
    return directory, state


def check_same_architecture(saved_vs_config: dict[str, tuple[Any, Any]]) -> None:
    """On resume the architecture comes from the checkpoint; a config that differs is an error.

    `saved_vs_config` maps a config key to (checkpoint value, config value); lists and tuples
    compare by their items (a YAML round trip turns tuples into lists).
    """

    def plain(value: Any) -> Any:
        return tuple(value) if isinstance(value, list | tuple) else value

    diffs = [
        f"{key}: checkpoint {plain(old)!r} vs config {plain(new)!r}"
        for key, (old, new) in saved_vs_config.items()
        if plain(old) != plain(new)
    ]
    if diffs:
        raise ValueError(
            "cannot resume: the checkpoint's architecture differs from the config ("
            + "; ".join(diffs)
            + "). Drop these overrides, or start a new run with another run.name"
        )


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """Randomness of one step on one rank: resuming at `step` reproduces it exactly."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) % (2**63 - 1))
