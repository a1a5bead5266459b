"""Benchmark the translator: training step img/s and peak memory, inference img/s.

Runs the real `translator_step` (D_U, D_P, then G + F + F_s with every loss) on random
images with the paper's networks, no Ray in the way. Example:

    python jobs/benchmark_translator.py --size 256 --batch 1 --device cpu --steps 3
    python jobs/benchmark_translator.py --size 256 --batch 8 --device cuda --precision bf16

Prints one JSON line per configuration (add --json-out FILE to append them to a file).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

import torch

from scenimefy.benchmarking import CLOCKS, append_json_lines, check_clock, machine_header
from scenimefy.config import load_config
from scenimefy.stages.translator import TranslatorNets, build_networks, build_optimizers, translator_step


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator_flops_per_image(G: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward FLOPs of G for one image (2 x MACs of every conv), counted with forward hooks."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size if hasattr(module, "kernel_size") else (0, 0)
        if isinstance(module, torch.nn.Conv2d):
            total += 2.0 * output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.ConvTranspose2d):
            total += 2.0 * inputs[0].numel() * (module.out_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in G.modules()]
    with torch.no_grad():
        G(torch.zeros(1, 3, size, size, device=device))
    for h in handles:
        h.remove()
    return total


def step_flops(nets: TranslatorNets, imgs: list[torch.Tensor], t, autocast: bool) -> float:
    """FLOPs of one full training step (forward and backward of every network), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        translator_step(nets, *imgs, t=t, epoch=1, total_epochs=20, generator=torch.Generator().manual_seed(0), autocast=autocast)
    return float(counter.get_total_flops())


def bench_training(
    size: int,
    batch: int,
    precision: str,
    device: torch.device,
    steps: int,
    warmup: int,
    channels_last: bool,
    compile: bool = False,
    clock: str = "wall",
) -> dict:
    cfg = load_config(None, [f"translator.precision={precision}", f"data.load_size={size}", f"data.crop_size={size}"])
    t = cfg.translator
    torch.manual_seed(0)
    modules = build_networks(t)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in modules.values():
        m.to(device, memory_format=fmt)
    opts, scheds = build_optimizers(modules, t)
    if compile:
        modules = {k: (torch.compile(m) if k in ("G", "D_U", "D_P") else m) for k, m in modules.items()}
    nets = TranslatorNets(**modules, optimizers=opts, schedulers=scheds)
    g = torch.Generator().manual_seed(0)
    imgs = [(torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt) for _ in range(4)]
    autocast = precision == "bf16" and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, now = [], CLOCKS[clock]
    for i in range(warmup + steps):
        _sync(device)
        start = now()
        translator_step(nets, *imgs, t=t, epoch=1, total_epochs=20, generator=torch.Generator().manual_seed(i), autocast=autocast)
        _sync(device)
        if i >= warmup:
            times.append(now() - start)
    step_s = sorted(times)[len(times) // 2]
    flops = step_flops(nets, imgs, t, autocast) if not compile else float("nan")
    out = {
        "kind": "train_step",
        "size": size,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "channels_last": channels_last,
        "compile": compile,
        "clock": clock,
        "sec_per_step_median": round(step_s, 4),
        "sec_per_step_all": [round(x, 4) for x in times],
        "img_per_s": round(batch / step_s, 4),
        "tflop_per_step": round(flops / 1e12, 4),
        "achieved_tflop_s": round(flops / step_s / 1e12, 3),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib(), 1),
    }
    return out


def bench_inference(size: int, batch: int, precision: str, device: torch.device, steps: int, warmup: int, clock: str = "wall") -> dict:
    cfg = load_config(None, [])
    G = build_networks(cfg.translator)["G"].to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    autocast = precision == "bf16" and device.type == "cuda"
    times, now = [], CLOCKS[clock]
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for i in range(warmup + steps):
            _sync(device)
            start = now()
            G(x)
            _sync(device)
            if i >= warmup:
                times.append(now() - start)
    s = sorted(times)[len(times) // 2]
    return {
        "kind": "inference",
        "size": size,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "sec_per_batch_median": round(s, 4),
        "img_per_s": round(batch / s, 3),
        "gflop_per_image": round(generator_flops_per_image(G, size, device) / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile G, D_U and D_P")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or this process's CPU time (--device cpu --threads 1 on a shared machine)")
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        check_clock(args.clock, device)
    except ValueError as e:
        p.error(str(e))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    header = machine_header(device)
    print(json.dumps(header), flush=True)
    rows = []
    for size in args.size:
        for batch in args.batch:
            rows.append(bench_training(size, batch, args.precision, device, args.steps, args.warmup, args.channels_last, args.compile, args.clock))
            print(json.dumps(rows[-1]), flush=True)
            if not args.skip_inference:
                rows.append(bench_inference(size, batch, args.precision, device, args.steps, args.warmup, args.clock))
                print(json.dumps(rows[-1]), flush=True)
    append_json_lines(args.json_out, [header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
