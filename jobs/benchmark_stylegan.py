"""Benchmark stages 0 and 1: StyleGAN2 pretraining sec/kimg and fine-tuning it/s, peak memory.

Runs the real `pretrain_step` / `finetune_step` on random images, no Ray and no MLflow (neither
needs to be installed). The lazy regularisers run only every few steps, so each kind of step
is timed on its own and the figures are amortised over the configured intervals:

    pretrain:  t = t_plain + (t_path - t_plain) / g_reg_every + (t_r1+path - t_path) / d_reg_every
    finetune:  t = t_plain + (t_r1 - t_plain) / d_reg_every

The architecture comes from a preset (``--config``; default: the paper's 256 px network) and
``--set section.key=value`` overrides. Fine-tuning needs CLIP ViT-B/32 and LPIPS-VGG: the configured
priors (local files / cache), or with ``--random-priors`` randomly initialised full-size models
of the same classes (no download; numerics differ, cost does not). Without open_clip / lpips
installed, only pretraining is measured. Examples:

    python jobs/benchmark_stylegan.py --config tiny --device cpu --random-priors
    python jobs/benchmark_stylegan.py --device cpu --size 64 --batch 4 --random-priors --set finetune.patch_size=16
    python jobs/benchmark_stylegan.py --device cuda --size 256 --batch 16 8 --random-priors

Prints one JSON line per configuration (add --json-out FILE to append them to a file).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jobs.benchmarking import (  # noqa: E402
    CLOCKS,
    PeakMemory,
    append_json_lines,
    check_clock,
    machine_header,
    median,
    timed,
)
from scenimefy.config import Config, load_config  # noqa: E402
from scenimefy.models.stylegan2 import freeze_for_finetuning  # noqa: E402
from scenimefy.stages.stylegan import (  # noqa: E402
    StyleGANNets,
    build_discriminator,
    build_generator,
    build_optimizers,
    finetune_step,
    pretrain_step,
)


def _times(fn, device: torch.device, steps: int, warmup: int, peak: PeakMemory, clock: str) -> tuple[float, float]:
    """(median, minimum) seconds of the timed calls (see `benchmarking.timed`)."""
    times = timed(fn, device, steps, warmup, clock, peak)
    return median(times), min(times)


def _nets(cfg: Config, device: torch.device, *, finetune: bool) -> StyleGANNets:
    s = cfg.stylegan
    torch.manual_seed(0)
    G, D, G_ema = build_generator(s), build_discriminator(s), build_generator(s)
    G_s = trainable = None
    if finetune:
        G_s = build_generator(s).requires_grad_(False)
        trainable = freeze_for_finetuning(G, cfg.finetune.n_trainable_blocks)
        G_s.to(device)
    G_ema.requires_grad_(False)
    for m in (G, D, G_ema):
        m.to(device)
    sec = cfg.finetune if finetune else cfg.pretrain
    g_optim, d_optim = build_optimizers(
        G, D, lr=sec.lr, beta1=sec.beta1, beta2=sec.beta2, g_reg_every=sec.g_reg_every, d_reg_every=sec.d_reg_every
    )
    return StyleGANNets(G=G, D=D, G_ema=G_ema, g_optim=g_optim, d_optim=d_optim, G_s=G_s, trainable=trainable)


def bench_pretrain(cfg: Config, batch: int, device: torch.device, steps: int, warmup: int, clock: str) -> dict:
    p = cfg.pretrain
    nets = _nets(cfg, device, finetune=False)
    real = torch.rand(batch, 3, cfg.stylegan.size, cfg.stylegan.size, device=device) * 2 - 1
    autocast = p.precision == "bf16" and device.type == "cuda"
    peak = PeakMemory(device)

    def run(step_index: int):
        return lambda i: pretrain_step(
            nets,
            real,
            p=p,
            step=step_index,
            generator=torch.Generator().manual_seed(i),
            ema_decay=0.999,
            autocast=autocast,
        )

    plain_step = next(i for i in range(1, 10_000) if i % p.d_reg_every and i % p.g_reg_every)
    path_step = next(i for i in range(1, 10_000) if i % p.d_reg_every and i % p.g_reg_every == 0)
    t_plain, b_plain = _times(run(plain_step), device, steps, warmup, peak, clock)
    t_path, b_path = _times(run(path_step), device, steps, warmup, peak, clock)
    t_both, b_both = _times(run(0), device, steps, warmup, peak, clock)  # R1 and path length (step 0)

    def amortised(plain: float, path: float, both: float) -> float:
        return plain + (path - plain) / p.g_reg_every + (both - path) / p.d_reg_every

    t, best = amortised(t_plain, t_path, t_both), amortised(b_plain, b_path, b_both)
    return {
        "kind": "pretrain",
        "size": cfg.stylegan.size,
        "channel_multiplier": cfg.stylegan.channel_multiplier,
        "channel_base": cfg.stylegan.channel_base,
        "channel_max": cfg.stylegan.channel_max,
        "batch": batch,
        "precision": p.precision,
        "device": str(device),
        "clock": clock,
        "sec_per_step_plain": round(t_plain, 4),
        "sec_per_step_path": round(t_path, 4),
        "sec_per_step_r1_path": round(t_both, 4),
        "sec_per_step_amortised": round(t, 4),
        "sec_per_kimg": round(t / (batch / 1000), 2),
        "sec_per_kimg_best": round(best / (batch / 1000), 2),
        "img_per_s": round(batch / t, 3),
        **peak.fields(),
    }


def _random_priors(device: torch.device):
    """Full-size CLIP ViT-B-32 (QuickGELU, as OpenAI's) and LPIPS-VGG, random weights, frozen."""
    import lpips as lpips_lib
    import open_clip

    from scenimefy.priors.loading import ClipEmbedder

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    pp = open_clip.get_model_preprocess_cfg(model)
    clip = ClipEmbedder.from_model(model, pp["mean"], pp["std"], pp["size"]).to(device)
    lp = lpips_lib.LPIPS(net="vgg", version="0.1", pretrained=False, pnet_rand=True, use_dropout=False, verbose=False)
    return clip, lp.eval().requires_grad_(False).to(device)


def bench_finetune(
    cfg: Config, batch: int, device: torch.device, steps: int, warmup: int, random_priors: bool, clock: str
) -> dict:
    f = cfg.finetune
    if random_priors:
        clip, lpips = _random_priors(device)
        priors = "random ViT-B-32 / LPIPS-VGG"
    else:
        from scenimefy.priors.loading import load_clip, load_lpips

        clip, lpips = load_clip(cfg.priors, device), load_lpips(cfg.priors, device)
        priors = f"{cfg.priors.clip_model}/{cfg.priors.clip_pretrained}, LPIPS-{cfg.priors.lpips_net}"
    nets = _nets(cfg, device, finetune=True)
    real = torch.rand(batch, 3, cfg.stylegan.size, cfg.stylegan.size, device=device) * 2 - 1
    autocast = f.precision == "bf16" and device.type == "cuda"
    peak = PeakMemory(device)

    def run(step_index: int):
        return lambda i: finetune_step(
            nets, real, f=f, step=step_index, generator=torch.Generator().manual_seed(i), ema_decay=0.999,
            clip=clip, lpips=lpips, autocast=autocast,
        )  # fmt: skip

    plain_step = next(i for i in range(1, 10_000) if i % f.d_reg_every)
    t_plain, b_plain = _times(run(plain_step), device, steps, warmup, peak, clock)
    t_r1, b_r1 = _times(run(0), device, steps, warmup, peak, clock)
    t = t_plain + (t_r1 - t_plain) / f.d_reg_every
    best = b_plain + (b_r1 - b_plain) / f.d_reg_every
    return {
        "kind": "finetune",
        "size": cfg.stylegan.size,
        "channel_multiplier": cfg.stylegan.channel_multiplier,
        "channel_base": cfg.stylegan.channel_base,
        "channel_max": cfg.stylegan.channel_max,
        "batch": batch,
        "precision": f.precision,
        "device": str(device),
        "n_trainable_blocks": f.n_trainable_blocks,
        "patch_count": f.patch_count,
        "patch_size": f.patch_size,
        "priors": priors,
        "clock": clock,
        "sec_per_step_plain": round(t_plain, 4),
        "sec_per_step_r1": round(t_r1, 4),
        "sec_per_step_amortised": round(t, 4),
        "it_per_s": round(1 / t, 3),
        "it_per_s_best": round(1 / best, 3),
        **peak.fields(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="preset or YAML for the architecture (default: the paper's)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="section.key=value",
        help="config override, repeatable (e.g. --set finetune.patch_size=16)",
    )
    parser.add_argument("--size", type=int, nargs="+", default=None, help="override stylegan.size (one run per size)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="per-device batch (default: the preset's)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stage", choices=["pretrain", "finetune", "both"], default="both")
    parser.add_argument("--random-priors", action="store_true", help="random full-size CLIP / LPIPS (no download)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per kind of step (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (CPU device with --threads 1 on a shared machine)",
    )
    parser.add_argument("--no-cudnn-benchmark", action="store_true", help="leave cudnn.benchmark off (no autotuning)")
    parser.add_argument("--json-out", default="")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        check_clock(args.clock, device)
    except ValueError as e:
        parser.error(str(e))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    header = machine_header(device, cudnn_benchmark=device.type == "cuda" and not args.no_cudnn_benchmark)
    print(json.dumps(header), flush=True)

    have_priors = all(importlib.util.find_spec(m) is not None for m in ("open_clip", "lpips"))
    stages = ["pretrain", "finetune"] if args.stage == "both" else [args.stage]
    if "finetune" in stages and not have_priors:
        print(json.dumps({"skipped": "finetune", "reason": "open_clip or lpips is not installed"}), flush=True)
        stages.remove("finetune")

    rows = []
    for size in args.size or [None]:
        overrides = list(args.overrides) + ([f"stylegan.size={size}"] if size else [])
        if args.precision:
            overrides += [f"pretrain.precision={args.precision}", f"finetune.precision={args.precision}"]
        cfg = load_config(args.config, overrides)
        for stage in stages:
            default_batch = (cfg.pretrain if stage == "pretrain" else cfg.finetune).batch_size_per_worker
            for batch in args.batch or [default_batch]:
                if stage == "pretrain":
                    row = bench_pretrain(cfg, batch, device, args.steps, args.warmup, args.clock)
                else:
                    row = bench_finetune(cfg, batch, device, args.steps, args.warmup, args.random_priors, args.clock)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    append_json_lines(args.json_out, [header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
