"""Benchmark the translator: training step img/s and peak memory, inference img/s.

Runs the real `translator_step` (D_U, D_P, then G + F + F_s with every loss) on random
images with the paper's networks, no Ray in the way. `--layout authors` (or `both`) also
times `authors_layout_step`: the same networks and losses called the way the authors' code
calls them (a separate forward for x^p, each discriminator called once for real and once
for fake, and every encoder pass re-run for the losses; docs/deviations.md, "Encoder features"),
so the speed-up over their layout is measured on the same machine in the same run. Example:

    python jobs/benchmark_translator.py --size 256 --batch 1 --device cpu --steps 3 --layout both
    python jobs/benchmark_translator.py --size 256 --batch 8 --device cuda --precision bf16

Prints one JSON line per configuration (add --json-out FILE to append them to a file).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from jobs.benchmarking import (
    CLOCKS,
    PeakMemory,
    append_json_lines,
    check_clock,
    machine_header,
    median,
    profile_once,
    timed,
)
from scenimefy.config import COMPILE_MODES, TranslatorConfig, load_config
from scenimefy.losses import hard_negative_weights, hdce_loss_layers, lsgan_loss, src_loss_layers, style_patch_nce
from scenimefy.models.utils import set_requires_grad
from scenimefy.stages.host import configure_process
from scenimefy.stages.schedules import hdce_gamma_schedule, lambda_sup_schedule
from scenimefy.stages.translator import (
    TranslatorNets,
    assemble_nets,
    build_networks,
    build_optimizers,
    translator_step,
)


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


def step_flops(step, nets: TranslatorNets, imgs: list[torch.Tensor], t, autocast: bool) -> float:
    """FLOPs of one full training step (forward and backward of every network), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(nets, *imgs, t=t, epoch=1, total_epochs=20, generator=torch.Generator().manual_seed(0), autocast=autocast)
    return float(counter.get_total_flops())


def authors_layout_step(
    nets: TranslatorNets,
    x: torch.Tensor,
    y: torch.Tensor,
    xp: torch.Tensor,
    yp: torch.Tensor,
    *,
    t: TranslatorConfig,
    epoch: int,
    total_epochs: int,
    generator: torch.Generator,
    autocast: bool = False,
) -> None:
    """The baseline: one step in the authors' call pattern (`semi_cut_model.py`, docs/deviations.md).

    Same networks, losses and updates as `translator_step`, so the difference in time is the
    layout alone: G([x; y]) and G(x^p) as two forwards; D_U and D_P called separately on fake
    and real; the losses re-encode x, y and y^p and encode G(x), G(y), G(x^p) one call each,
    and the key passes build a graph (the authors do not wrap them in no_grad).
    """
    b, layers = x.shape[0], list(t.nce_layers)
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast)
    lambda_sup = lambda_sup_schedule(epoch, total_epochs)
    gamma = hdce_gamma_schedule(epoch, total_epochs, gamma_start=t.gamma_start, gamma_end=t.gamma_end)
    with amp:
        fake = nets.G(torch.cat([x, y]))
        fake_x, fake_y = fake[:b], fake[b:]
        fake_xp = nets.G(xp)

    set_requires_grad(nets.D_U, True)
    set_requires_grad(nets.D_P, True)
    with amp:
        loss_d_u = 0.5 * (lsgan_loss(nets.D_U(fake_x.detach()).float(), False) + lsgan_loss(nets.D_U(y).float(), True))
    nets.optimizers["D_U"].zero_grad(set_to_none=True)
    loss_d_u.backward()
    nets.optimizers["D_U"].step()
    with amp:
        loss_d_p = 0.5 * (
            lsgan_loss(nets.D_P(torch.cat([xp, fake_xp.detach()], 1)).float(), False)
            + lsgan_loss(nets.D_P(torch.cat([xp, yp], 1)).float(), True)
        )
    nets.optimizers["D_P"].zero_grad(set_to_none=True)
    loss_d_p.backward()
    nets.optimizers["D_P"].step()

    set_requires_grad(nets.D_U, False)
    set_requires_grad(nets.D_P, False)

    def encode(img: torch.Tensor) -> list[torch.Tensor]:
        return [f.float() for f in nets.G(img, layers=layers, encode_only=True)]

    with amp:
        loss_gan = lsgan_loss(nets.D_U(fake_x).float(), True)
        loss_gan_p = lsgan_loss(nets.D_P(torch.cat([xp, fake_xp], 1)).float(), True)
        q_x, ids = nets.F(encode(fake_x), t.num_patches, generator=generator)
        k_x, _ = nets.F([f.detach() for f in encode(x)], t.num_patches, patch_ids=ids)
        loss_src = src_loss_layers(q_x, k_x)
        loss_hdce, _ = hdce_loss_layers(q_x, k_x, [hard_negative_weights(k, gamma=gamma) for k in k_x], tau=t.nce_tau)
        q_y, _ = nets.F(encode(fake_y), t.num_patches, patch_ids=ids)
        k_y, _ = nets.F([f.detach() for f in encode(y)], t.num_patches, patch_ids=ids)
        loss_hdce_y, _ = hdce_loss_layers(q_y, k_y, [hard_negative_weights(k, gamma=gamma) for k in k_y], tau=t.nce_tau)
        k_s, ids_s = nets.F_s([f.detach() for f in encode(yp)], t.num_patches, generator=generator)
        q_s, _ = nets.F_s(encode(fake_xp), t.num_patches, patch_ids=ids_s)
        loss_style = style_patch_nce(q_s, k_s, tau=t.nce_tau)
        loss_g = (
            t.lambda_gan * loss_gan
            + t.lambda_src * loss_src
            + t.lambda_hdce * 0.5 * (loss_hdce + loss_hdce_y)
            + lambda_sup * (t.lambda_gan_p * loss_gan_p + t.lambda_style * loss_style)
        )
    for name in ("G", "F", "F_s"):
        nets.optimizers[name].zero_grad(set_to_none=True)
    loss_g.backward()
    for name in ("G", "F", "F_s"):
        nets.optimizers[name].step()


STEPS = {"ours": translator_step, "authors": authors_layout_step}


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
    layout: str = "ours",
    profile_dir: str = "",
    compile_mode: str = "default",
) -> dict:
    step = STEPS[layout]
    cfg = load_config(None, [f"translator.precision={precision}", f"data.load_size={size}", f"data.crop_size={size}"])
    t = cfg.translator
    torch.manual_seed(0)
    modules = build_networks(t)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in modules.values():
        m.to(device, memory_format=fmt)
    opts, scheds = build_optimizers(modules, t)
    if compile:
        torch._dynamo.reset()  # each configuration compiles afresh, as a training run would
    nets = assemble_nets(modules, opts, scheds, compile=compile, compile_mode=compile_mode)
    g = torch.Generator().manual_seed(0)
    imgs = [
        (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt)
        for _ in range(4)
    ]
    autocast = precision == "bf16"
    peak = PeakMemory(device)

    def run(i: int) -> None:
        step(nets, *imgs, t=t, epoch=1, total_epochs=20, generator=torch.Generator().manual_seed(i), autocast=autocast)

    times = timed(run, device, steps, warmup, clock, peak)
    step_s = median(times)
    flops = step_flops(step, nets, imgs, t, autocast) if not compile else float("nan")
    profiled = {}
    if profile_dir:
        mode = f"_compile_{compile_mode}" if compile else ""
        name = f"profile_{layout}_{size}px_b{batch}_{precision}{'_cl' if channels_last else ''}{mode}.txt"
        profiled = profile_once(lambda: run(steps + warmup), device, f"{profile_dir}/{name}")
    return {
        "kind": "train_step",
        "layout": layout,
        "size": size,
        "batch": batch,
        "precision": precision,
        "device": str(device),
        "channels_last": channels_last,
        "compile": compile,
        "compile_mode": compile_mode if compile else None,
        "clock": clock,
        "sec_per_step_median": round(step_s, 4),
        "sec_per_step_all": [round(x, 4) for x in times],
        "img_per_s": round(batch / step_s, 4),
        "tflop_per_step": round(flops / 1e12, 4),
        "achieved_tflop_s": round(flops / step_s / 1e12, 3),
        "threads": torch.get_num_threads(),
        **peak.fields(),
        **profiled,
    }


def bench_inference(
    size: int, batch: int, precision: str, device: torch.device, steps: int, warmup: int, clock: str = "wall"
) -> dict:
    cfg = load_config(None, [])
    G = build_networks(cfg.translator)["G"].to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    autocast = precision == "bf16"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        s = median(timed(lambda i: G(x), device, steps, warmup, clock))
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
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=sorted(COMPILE_MODES),
        help="torch.compile mode (translator.compile_mode)",
    )
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument(
        "--layout",
        choices=["ours", "authors", "both"],
        default="ours",
        help="time our step, the authors' call pattern (the baseline), or both, alternating per size/batch",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (--device cpu --threads 1 on a shared machine)",
    )
    p.add_argument(
        "--allocator",
        choices=["heap", "default"],
        default="heap",
        help="CPU: keep freed memory in glibc's heap as training does (run.cpu_keep_heap), or glibc's default",
    )
    p.add_argument(
        "--profile",
        default="",
        metavar="DIR",
        help="after timing, profile one more step of each configuration: kernel table to DIR, "
        "time per kind of kernel in the JSON line",
    )
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    configure_process(device, torch_threads=args.threads, keep_heap=args.allocator == "heap")
    try:
        check_clock(args.clock, device)
    except ValueError as e:
        p.error(str(e))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    header = machine_header(device, allocator=args.allocator if device.type == "cpu" else None)
    print(json.dumps(header), flush=True)
    rows = []
    for size in args.size:
        for batch in args.batch:
            for layout in ("ours", "authors") if args.layout == "both" else (args.layout,):
                rows.append(
                    bench_training(
                        size,
                        batch,
                        args.precision,
                        device,
                        args.steps,
                        args.warmup,
                        args.channels_last,
                        args.compile,
                        args.clock,
                        layout,
                        profile_dir=args.profile,
                        compile_mode=args.compile_mode,
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
            if not args.skip_inference:
                rows.append(bench_inference(size, batch, args.precision, device, args.steps, args.warmup, args.clock))
                print(json.dumps(rows[-1]), flush=True)
    append_json_lines(args.json_out, [header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
