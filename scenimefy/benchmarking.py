"""What every benchmark script records beside its numbers: the machine, the versions, the command.

`jobs/benchmark_*.py` print one JSON header line, then one JSON line per measurement, and
append both to `--json-out` (the raw data behind BENCHMARKS.md, under benchmarks/).
"""

from __future__ import annotations

import json
import os
import platform
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
