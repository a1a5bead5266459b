"""Process settings a stage applies before it builds its networks: threads and the allocator.

On the CPU a training step allocates the same few hundred MB of activations every step. glibc
serves blocks above 32 MB with mmap and unmaps them on free, so every step faults in fresh,
zeroed pages: at 256 px a quarter of the step is page faults and kernel time (BENCHMARKS.md).
`keep_freed_memory_in_heap` turns that off for this process; the price is that its resident
memory stays at its peak, which a training process reaches on its first step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import torch

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory_in_heap() -> bool:
    """glibc only: no mmap for large blocks, no trimming of the heap. False where not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def configure_process(device: torch.device, *, torch_threads: int = 0, keep_heap: bool = True) -> None:
    """Intra-op threads (0: torch's default), and on the CPU the allocator setting above."""
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    if device.type == "cpu" and keep_heap:
        keep_freed_memory_in_heap()
