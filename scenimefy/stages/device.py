"""The torch device a stage, an actor or the translate command runs on."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device, *, cpu_fallback: bool = False) -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything else as torch understands it.

    cpu_fallback: a CUDA device where CUDA is absent becomes the CPU (Ray actors that asked
    for a GPU on a cluster whose GPUs are declared but not real, as in the tests).
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if cpu_fallback and device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device
