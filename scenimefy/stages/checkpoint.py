"""Checkpoints as plain data (docs/architecture.md, "Checkpoints and resume").

A training checkpoint is a directory: `state.pt` (every state_dict of unwrapped modules,
optimisers, schedulers, progress counters, stream positions, RNG states, the config as a dict
and the package version), `generator.pt` (the inference snapshot) and `config.yaml`. Everything
loads with `torch.load(weights_only=True)`; every file is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scenimefy import __version__
from scenimefy.data.images import atomic_path
from scenimefy.models.utils import load_weights

STATE_FILE = "state.pt"
TRANSLATOR_SNAPSHOT_FILE = "generator.pt"  # translator inference snapshot (what translate loads)
STYLEGAN_SNAPSHOT_FILE = "stylegan.pt"  # rosinality-format StyleGAN2 export (what stages 1 and 2 load)
CONFIG_FILE = "config.yaml"


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
