"""Read and write rosinality/stylegan2-pytorch checkpoints (docs/method.md, "Stage 0").

The format is a ``torch.save``d dict ``{g, d, g_ema, g_optim, d_optim, args, ada_aug_p}``:
state dicts of the generator, discriminator and EMA generator, the two Adam states, the
training arguments (an ``argparse.Namespace`` in rosinality's files; a plain dict in ours) and
the ADA probability. The authors' released ``lhq-220000.pt`` / ``shinkai-221000.pt`` use it.
Our modules carry the same names, so weights load 1:1 and strictly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scenimefy.models.stylegan2 import (
    RO_CHANNEL_BASE,
    RO_CHANNEL_MAX,
    Discriminator,
    Generator,
    channel_table,
)
from scenimefy.models.utils import why_unreadable

CHECKPOINT_KEYS = ("g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p")


def _allow_namespace():
    """Allow-list ``argparse.Namespace`` for ``weights_only`` loading (scoped where torch can)."""
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5
        return torch.serialization.safe_globals([argparse.Namespace])
    torch.serialization.add_safe_globals([argparse.Namespace])
    return contextlib.nullcontext()


def load_rosinality_checkpoint(path: str | os.PathLike) -> dict:
    """Load a rosinality-format checkpoint on CPU with ``weights_only=True``.

    ``argparse.Namespace`` is allow-listed (rosinality pickles its args as one) and converted
    to a dict under ``"args"``. Raises ``ValueError`` naming the file if it cannot be read or
    holds neither ``g`` nor ``g_ema``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StyleGAN2 checkpoint {str(path)!r} does not exist")
    try:
        with _allow_namespace():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we read"
        raise ValueError(
            f"cannot read StyleGAN2 checkpoint {str(path)!r}: {why_unreadable(path, error)}. "
            "Expected a torch.save'd rosinality dict {g, d, g_ema, g_optim, d_optim, args}."
        ) from None
    if not isinstance(ckpt, dict) or not ("g_ema" in ckpt or "g" in ckpt):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{str(path)!r} is not a rosinality StyleGAN2 checkpoint: "
            f"expected keys {list(CHECKPOINT_KEYS)}, found {found}"
        )
    if isinstance(ckpt.get("args"), argparse.Namespace):
        ckpt["args"] = dict(vars(ckpt["args"]))
    return ckpt


# ----------------------------------------------------------------------------------------
# Inferring the architecture from a state dict


def _count_indexed(state: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.fullmatch(key))})


def infer_generator_architecture(state: dict) -> dict:
    """Size, latent dim, mapping depth and channel table of a generator state dict.

    Returns ``{size, style_dim, n_mlp, channels, channel_multiplier, channel_base,
    channel_max}``; the last three reproduce ``channels`` with :func:`channel_table` (with
    rosinality's base 16384 whenever the widths allow it).
    """
    try:
        n_to_rgbs = _count_indexed(state, r"to_rgbs\.(\d+)\.conv\.weight")
        n_mlp = _count_indexed(state, r"style\.(\d+)\.weight")
        style_dim = state["style.1.weight"].shape[1]
        channels = {4: state["input.input"].shape[1]}
        for j in range(n_to_rgbs):
            channels[2 ** (j + 3)] = state[f"to_rgbs.{j}.conv.weight"].shape[2]
    except KeyError as error:
        raise ValueError(f"not a StyleGAN2 generator state dict: missing {error}") from error
    size = 2 ** (n_to_rgbs + 2)

    # ch(res) = min(channel_max, P // res) with P = channel_base * channel_multiplier
    channel_max = channels[4]
    below_max = [res * ch for res, ch in channels.items() if ch < channel_max]
    product = min(below_max) if below_max else channel_max * size
    if product % RO_CHANNEL_BASE == 0:
        channel_base, channel_multiplier = RO_CHANNEL_BASE, product // RO_CHANNEL_BASE
    else:
        channel_base, channel_multiplier = product, 1
    try:
        rebuilt = channel_table(
            size, channel_multiplier=channel_multiplier, channel_base=channel_base, channel_max=channel_max
        )
    except ValueError as error:
        raise ValueError(f"unsupported StyleGAN2 generator: {error}") from error
    if rebuilt != channels:
        raise ValueError(f"generator channel widths {channels} do not follow a StyleGAN2 channel table")
    return {
        "size": size,
        "style_dim": style_dim,
        "n_mlp": n_mlp,
        "channels": channels,
        "channel_multiplier": channel_multiplier,
        "channel_base": channel_base,
        "channel_max": channel_max,
    }


def _load_strict(module: nn.Module, state: dict, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"checkpoint entry {what!r} does not match the inferred architecture: {error}") from error


def build_from_rosinality(
    ckpt: dict,
    *,
    expected_size: int | None = None,
    expected_channel_multiplier: int | None = None,
    expected_channel_base: int = RO_CHANNEL_BASE,
    expected_channel_max: int = RO_CHANNEL_MAX,
) -> tuple[Generator | None, Discriminator | None, Generator, dict]:
    """Build ``(g, d, g_ema, info)`` matching a loaded checkpoint and load its weights strictly.

    The architecture comes from the weights (``g_ema``, else ``g``). When ``expected_size`` /
    ``expected_channel_multiplier`` are given (the run's config), a checkpoint with another
    size or channel table raises ``ValueError`` naming both. ``g`` / ``d`` are ``None`` when
    the file lacks them (some released files hold only ``g_ema``). ``info``: the inferred
    architecture plus ``args`` (dict), ``ada_aug_p``, ``g_optim``, ``d_optim`` (or None).
    """
    reference = ckpt.get("g_ema") if ckpt.get("g_ema") is not None else ckpt.get("g")
    if reference is None:
        raise ValueError("checkpoint holds neither 'g_ema' nor 'g'")
    arch = infer_generator_architecture(reference)

    if expected_size is not None or expected_channel_multiplier is not None:
        want_size = arch["size"] if expected_size is None else expected_size
        size_ok = want_size == arch["size"]
        channels_ok = True
        if expected_channel_multiplier is not None and size_ok:
            want = channel_table(
                want_size,
                channel_multiplier=expected_channel_multiplier,
                channel_base=expected_channel_base,
                channel_max=expected_channel_max,
            )
            channels_ok = want == arch["channels"]
        if not (size_ok and channels_ok):
            want_cm = "?" if expected_channel_multiplier is None else expected_channel_multiplier
            raise ValueError(
                f"checkpoint is {arch['size']} px with channel_multiplier {arch['channel_multiplier']} "
                f"(channels {arch['channels']}), config asks for {want_size} px / {want_cm}: "
                "set the StyleGAN size and channel_multiplier to the checkpoint's, or pick another checkpoint"
            )

    def new_generator() -> Generator:
        return Generator(
            arch["size"],
            arch["style_dim"],
            arch["n_mlp"],
            channel_multiplier=arch["channel_multiplier"],
            channel_base=arch["channel_base"],
            channel_max=arch["channel_max"],
        )

    g_ema = new_generator()
    _load_strict(g_ema, reference, "g_ema" if ckpt.get("g_ema") is not None else "g")
    g = None
    if ckpt.get("g") is not None:
        g = new_generator()
        _load_strict(g, ckpt["g"], "g")
    d = None
    if ckpt.get("d") is not None:
        d = Discriminator(
            arch["size"],
            channel_multiplier=arch["channel_multiplier"],
            channel_base=arch["channel_base"],
            channel_max=arch["channel_max"],
        )
        _load_strict(d, ckpt["d"], "d")

    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        args = dict(vars(args))
    info = {
        **{k: v for k, v in arch.items() if k != "channels"},
        "channels": dict(arch["channels"]),
        "args": args,
        "ada_aug_p": ckpt.get("ada_aug_p"),
        "g_optim": ckpt.get("g_optim"),
        "d_optim": ckpt.get("d_optim"),
    }
    return g, d, g_ema, info


# ----------------------------------------------------------------------------------------
# Saving


def _unwrap(module: nn.Module) -> nn.Module:
    """Strip DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def save_rosinality_checkpoint(
    path: str | os.PathLike,
    g: nn.Module,
    d: nn.Module,
    g_ema: nn.Module,
    g_optim: torch.optim.Optimizer | None,
    d_optim: torch.optim.Optimizer | None,
    args: dict[str, Any],
    *,
    ada_aug_p: float = 0.0,
) -> None:
    """Write ``{g, d, g_ema, g_optim, d_optim, args, ada_aug_p}`` atomically (temp file + rename).

    ``args`` is stored as a plain dict (never a pickled Namespace), so the file loads with
    ``weights_only=True`` here and in rosinality's scripts (which read only the weights).
    """
    if isinstance(args, argparse.Namespace):
        args = dict(vars(args))
    ckpt = {
        "g": _unwrap(g).state_dict(),
        "d": _unwrap(d).state_dict(),
        "g_ema": _unwrap(g_ema).state_dict(),
        "g_optim": g_optim.state_dict() if g_optim is not None else None,
        "d_optim": d_optim.state_dict() if d_optim is not None else None,
        "args": dict(args),
        "ada_aug_p": float(ada_aug_p),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
