"""Benchmark G's anti-aliased resampling: depthwise convolutions vs pointwise formulas.

`Downsample` (reflect pad, [1,2,1]^2 / 16 blur, stride 2) and `Upsample` (zero insertion, the
[1,3,3,1]^2 blur) hold almost no FLOPs but touch the largest activations of the generator; on
a GPU their depthwise (transposed) convolutions may cost far more than their bytes. Written per
axis as strided slices and weighted sums they become pointwise work that torch.compile fuses:

    down: out[j] = (x[2j-1] + 2 x[2j] + x[2j+1]) / 4          (reflected at the borders)
    up:   out[2j] = (x[j-1] + 3 x[j]) / 4,  out[2j+1] = (3 x[j] + x[j+1]) / 4   (replicated)

This script first checks that both forms agree (values and input gradients, fp32), then times
forward + backward of each at the paper generator's shapes. Example (the GPU question):

    python jobs/benchmark_resampling.py --device cuda --batch 32 --dtype bf16 --compile
    python jobs/benchmark_resampling.py --device cpu --batch 1 --steps 5

Prints one JSON line per measurement (--json-out FILE appends them to a file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jobs.benchmarking import append_json_lines, machine_header, median, timed  # noqa: E402
from scenimefy.models.translator import Downsample, Upsample  # noqa: E402

# (module, channels, input side) at 256 px, ngf 64: G's two downsamplings and two upsamplings.
SHAPES = [("down", 128, 256), ("down", 256, 128), ("up", 256, 64), ("up", 128, 128)]


def down_pointwise(x: Tensor) -> Tensor:
    """`Downsample` as strided slices: [1,2,1]/4 along H, then along W (reflect pad 1)."""
    for dim in (2, 3):
        n = x.shape[dim]
        p = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 2, 1)], dim)
        m = (n + 1) // 2
        a, b, c = (p.narrow(dim, k, 2 * m - 1) for k in range(3))
        pick = (slice(None),) * dim + (slice(None, None, 2),)
        x = (a[pick] + 2 * b[pick] + c[pick]) * 0.25
    return x


def up_pointwise(x: Tensor) -> Tensor:
    """`Upsample` as interleaved weighted sums: [1,3]/4 and [3,1]/4 along H, then W (replicate)."""
    for dim in (2, 3):
        n = x.shape[dim]
        prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
        nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
        even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt
        x = torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)
    return x


def check_equal(device: torch.device) -> float:
    """Largest |difference| between the two forms over values and input gradients (fp32, odd sizes too)."""
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for kind, size in [("down", (2, 3, 9, 6)), ("down", (1, 4, 16, 16)), ("up", (2, 3, 5, 7)), ("up", (1, 4, 8, 8))]:
        module = (Downsample if kind == "down" else Upsample)(size[1]).to(device)
        fn = down_pointwise if kind == "down" else up_pointwise
        x = torch.randn(size, generator=g).to(device).requires_grad_(True)
        ref = module(x)
        grad_out = torch.randn(ref.shape, generator=g).to(device)
        (ref_grad,) = torch.autograd.grad(ref, x, grad_out)
        out = fn(x)
        (out_grad,) = torch.autograd.grad(out, x, grad_out)
        if out.shape != ref.shape:
            raise AssertionError(f"{kind} {size}: pointwise shape {tuple(out.shape)} != {tuple(ref.shape)}")
        worst = max(worst, (out - ref).abs().max().item(), (out_grad - ref_grad).abs().max().item())
    if worst > 1e-5:
        raise AssertionError(f"the pointwise forms differ from the modules by {worst:.2e}")
    return worst


def bench(kind: str, channels: int, side: int, form: str, args, device: torch.device) -> dict:
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    fn = (
        (Downsample if kind == "down" else Upsample)(channels).to(device)
        if form == "conv"
        else (down_pointwise if kind == "down" else up_pointwise)
    )
    if args.compile:
        torch._dynamo.reset()
        fn = torch.compile(fn, dynamic=False)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, channels, side, side, device=device, dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)

    def run(i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = fn(x)
        y.backward(torch.ones_like(y))
        x.grad = None

    times = timed(run, device, args.steps, args.warmup)
    s = median(times)
    out_side = side // 2 if kind == "down" else side * 2
    moved = (
        x.numel() * x.element_size() * 2 + args.batch * channels * out_side**2 * x.element_size() * 2
    )  # fwd + bwd, once each
    return {
        "kind": kind, "form": form, "channels": channels, "side": side, "batch": args.batch, "dtype": args.dtype,
        "compile": args.compile, "channels_last": args.channels_last, "device": str(device),
        "ms_fwd_bwd_median": round(s * 1e3, 3), "min_bytes_gb_s": round(moved / s / 1e9, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    header = machine_header(device)
    header["max_abs_difference"] = check_equal(device)
    print(json.dumps(header), flush=True)
    rows = []
    for kind, channels, side in SHAPES:
        for form in ("conv", "pointwise"):
            rows.append(bench(kind, channels, side, form, args, device))
            print(json.dumps(rows[-1]), flush=True)
    append_json_lines(args.json_out, [header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
