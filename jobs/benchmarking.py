"""What every benchmark script records beside its numbers: the machine, the versions, the command.

`jobs/benchmark_*.py` print one JSON header line, then one JSON line per measurement, and
append both to `--json-out` (the raw data behind BENCHMARKS.md, under benchmarks/).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path
from typing import Iterable

import torch

# "cpu": this process's CPU seconds, which other jobs on a shared machine do not inflate (use it
# with one thread: with N threads it sums them); "wall": elapsed time, what a user waits.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def check_clock(clock: str, device: torch.device) -> None:
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ValueError("--clock cpu measures one CPU thread: use it with --device cpu --threads 1")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_header(device: torch.device | None = None, **extra) -> dict:
    """Date, CPU, core count, load, Python/torch versions, threads, GPU name, and the command line."""
    gpu = None
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    elif device is None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {
        "date": date.today().isoformat(),
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        **extra,
        "command": " ".join(["python", *sys.argv]),
    }


def append_json_lines(path: str, rows: Iterable[dict]) -> None:
    """Append one JSON object per line (no-op for an empty path)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings of asynchronous CUDA calls are otherwise wrong)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of the timed steps ("steady": GPU peak after the warmup calls, so cuDNN's
    autotuning workspaces under cudnn.benchmark are left out) and including the warmup.
    On CPU both are the process's peak RSS (it cannot be reset)."""

    def __init__(self, device: torch.device):
        self.device, self.steady, self.with_warmup = device, 0.0, 0.0
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    def _current(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def after_warmup(self) -> None:
        self.with_warmup = max(self.with_warmup, self._current())
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def after_timed(self) -> None:
        self.steady = max(self.steady, self._current())
        self.with_warmup = max(self.with_warmup, self.steady)

    def fields(self) -> dict[str, float]:
        return {"peak_mem_mib": round(self.steady, 1), "peak_mem_mib_incl_warmup": round(self.with_warmup, 1)}


def timed(
    fn, device: torch.device, steps: int, warmup: int, clock: str = "wall", peak: PeakMemory | None = None
) -> list[float]:
    """Seconds of each of ``steps`` calls ``fn(i)`` after ``warmup`` untimed ones.

    The minimum is the better estimate on a machine shared with other jobs; with
    ``clock="cpu"`` (CPU device, one thread) the time is the process's CPU time, which other
    jobs on the machine do not inflate.
    """
    now = CLOCKS[clock]
    times = []
    for i in range(warmup + steps):
        if i == warmup and peak is not None:
            peak.after_warmup()
        sync(device)
        start = now()
        fn(i)
        sync(device)
        if i >= warmup:
            times.append(now() - start)
    if peak is not None:
        peak.after_timed()
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


# Kernel-name fragments -> kind, first match wins (cuDNN/CUTLASS convolutions are implicit GEMMs).
_KERNEL_KINDS = (
    ("layout", ("nchwtonhwc", "nhwctonchw", "transpose")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit")),
    ("matmul", ("gemm", "cutlass", "cublas", "xmma", "aten::mm", "aten::bmm", "aten::addmm")),
    ("fused (triton)", ("triton_",)),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, parts in _KERNEL_KINDS if any(p in low for p in parts)), "other")


def profile_once(fn, device: torch.device, table_path: str | os.PathLike, rows: int = 40) -> dict:
    """Run ``fn()`` once under torch.profiler; write the top ``rows`` kernels/ops to ``table_path``.

    Returns where the time went: wall seconds, busy seconds of the device's kernels (on a GPU;
    on the CPU, operator self time), their share of wall time (a GPU well under 1 is waiting
    for launches), and seconds per kind of kernel (convolution, matmul, fused, layout, other).
    """
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    sync(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    attr = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    by_kind: dict[str, float] = {}
    for event in averages:
        seconds = getattr(event, attr, 0.0) / 1e6
        if seconds > 0:
            kind = kernel_kind(event.key)
            by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    busy = sum(by_kind.values())
    path = Path(table_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(averages.table(sort_by=attr, row_limit=rows, max_name_column_width=90) + "\n")
    return {
        "profile_wall_s": round(wall, 4),
        "profile_busy_s": round(busy, 4),
        "profile_busy_fraction": round(busy / wall, 3) if wall > 0 else None,
        "profile_seconds_by_kind": {k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "profile_table": str(path),
    }
