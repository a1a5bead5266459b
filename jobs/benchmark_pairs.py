"""Benchmark stage 2: pseudo pairs generated and segmented per second.

Three ways over the *same* models in one run:

  serial   the authors' loop: one seed at a time, G_s + G_t at batch 1, then Mask2Former on
           that pair (docs/deviations.md, "Batched generation and segmentation");
  batched  `PairGenerator` + `PairScorer` in-process at --batch (what one Ray actor does);
  ray      the Ray Data plan of `scenimefy pairs` (generator pool -> Mask2Former pool, no PNG
           writing) for each --ray-pools size; pairs/s overall and per actor (optional: needs
           Ray; skipped with --no-ray or when Ray is not installed).

The ratio batched / serial is the "per GPU" speed-up (goal: >= 5x on a GPU). Examples:

    # CPU, tiny models (the CI machine)
    python jobs/benchmark_pairs.py --device cpu --generator tiny --mask2former tiny --n 64 --batch 16 --ray-pools 1 2
    # one GPU, the paper's StyleGAN2 (256 px) and a random Swin-B Mask2Former; no Ray needed
    python jobs/benchmark_pairs.py --device cuda --generator paper --random-mask2former swin-base \\
        --n 256 --batch 32 --precision bf16 --no-ray

Prints one JSON line per measurement (--json-out FILE appends them to a file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jobs.benchmarking import append_json_lines, machine_header  # noqa: E402
from scenimefy.models.stylegan2 import Generator  # noqa: E402
from scenimefy.priors.segmentation import SemanticScorer  # noqa: E402
from scenimefy.stages.pairs import PairGenerator, PairScorer  # noqa: E402

TINY_GENERATOR = dict(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_base=256, channel_max=32)
PAPER_GENERATOR = dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=2)  # rosinality's 256 px config


# ----------------------------------------------------------------------------------------
# Models with random weights (timing does not depend on the values)


def build_generators(kind: str, seed: int = 0) -> tuple[Generator, Generator]:
    arch = dict(TINY_GENERATOR if kind == "tiny" else PAPER_GENERATOR)
    size, style_dim, n_mlp = arch.pop("size"), arch.pop("style_dim"), arch.pop("n_mlp")
    torch.manual_seed(seed)
    g_s = Generator(size, style_dim, n_mlp, **arch)
    g_t = Generator(size, style_dim, n_mlp, **arch)
    g_t.load_state_dict(g_s.state_dict())
    return g_s.eval(), g_t.eval()


def mask2former_config(kind: str):
    """transformers configs: a tiny CPU model, or Swin-B ADE20k-150 (the paper's network, random)."""
    from transformers import Mask2FormerConfig, SwinConfig

    if kind == "tiny":
        from scenimefy.demo.priors import tiny_mask2former_config

        return tiny_mask2former_config()
    # maskformer2_swin_base_384_bs16_160k_res640 (docs/method.md, "Stage 2"): Swin-B, window 12, 384 pre-training;
    # Mask2FormerConfig's defaults are that model's decoder (100 queries, 6 encoder / 10 decoder layers, 256 wide).
    backbone = SwinConfig(
        image_size=384,
        patch_size=4,
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(backbone_config=backbone, num_labels=150)


def build_mask2former(kind: str, seed: int = 0):
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(seed)
    return Mask2FormerForUniversalSegmentation(mask2former_config(kind)).eval()


# ----------------------------------------------------------------------------------------
# Measurements


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_in_process(gen: PairGenerator, scorer: PairScorer, seeds: np.ndarray, batch: int, warmup: int) -> dict:
    """Time generation and segmentation separately over `seeds` in batches of `batch`."""
    device = scorer.scorer.device
    for i in range(warmup):  # allocator, cuDNN autotuning, lazy init
        scorer(gen({"seed": seeds[i * batch : (i + 1) * batch] + 10**6}))
    t_gen = t_seg = 0.0
    for start in range(0, len(seeds), batch):
        _sync(device)
        t0 = time.perf_counter()
        pairs = gen({"seed": seeds[start : start + batch]})  # ends with uint8 on the host: synchronised
        t1 = time.perf_counter()
        scorer(pairs)
        _sync(device)
        t2 = time.perf_counter()
        t_gen, t_seg = t_gen + t1 - t0, t_seg + t2 - t1
    n = len(seeds)
    return {
        "pairs_per_s": n / (t_gen + t_seg),
        "generate_pairs_per_s": n / t_gen,
        "segment_pairs_per_s": n / t_seg,
        "seconds": t_gen + t_seg,
    }


def bench_ray(args, files: dict, pool: int, n: int) -> dict:
    """The stage's Ray Data plan (no PNG writing) with `pool` generator and `pool` Mask2Former actors.

    Every run starts its actor pools (model loading), so the steady rate is taken from two runs:
    (n - n_small) / (t(n) - t(n_small)) with n_small = one batch per actor.
    """
    from scenimefy.config import load_config
    from scenimefy.distributed.cluster import init_ray
    from scenimefy.distributed.pairs import pairs_dataset, rows_per_block

    cfg = load_config(
        None,
        [
            f"run.use_gpu={args.device == 'cuda'}",
            f"run.torch_threads={args.ray_threads}",
            f"pairs.batch_size={args.batch}",
            f"pairs.generator_group={args.group or args.batch}",
            f"pairs.generator_actors={pool}",
            f"pairs.segmenter_actors={pool}",
            f"pairs.gpus_per_actor={args.gpus_per_actor or max(torch.cuda.device_count(), 1) / (2 * pool)}",
            f"pairs.precision={args.precision}",
            f"pairs.mean_latent_samples={args.mean_latent_samples}",
        ],
    )
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s raylet start-up wait
        try:
            init_ray(num_cpus_needed=2 * pool + 1)
            break
        except Exception as e:  # noqa: BLE001
            if attempt == 2:
                raise
            print(f"# ray.init failed ({e}); retrying", file=sys.stderr)
    paths = {"source": files["g_s"], "target": files["g_t"], "priors": {"mask2former": files["m2f"], "offline": True}}

    def wall(count: int) -> float:
        began = time.perf_counter()
        rows = sum(
            len(b["seed"]) for b in pairs_dataset(cfg, 0, count, paths, write_root=None).iter_batches(batch_size=None)
        )
        assert rows == count, (rows, count)
        return time.perf_counter() - began

    n_small = rows_per_block(cfg) * pool
    t_small, t_full = wall(n_small), wall(n)
    steady = (n - n_small) / (t_full - t_small) if t_full > t_small else float("nan")
    return {
        "pool": pool,
        "pairs_per_s": n / t_full,  # wall, with actor start-up (model loading)
        "pairs_per_s_steady": steady,  # start-up removed by the difference of two runs
        "pairs_per_s_per_actor_pair": steady / pool,
        "startup_s": t_small,  # wall of one batch per actor: start-up dominated
        "seconds": t_full,
    }


def write_inputs(directory: Path, g_s: Generator, g_t: Generator, m2f) -> dict:
    """Files for the Ray actors: rosinality-style {g_ema} checkpoints and a save_pretrained folder."""
    torch.save({"g_ema": g_s.state_dict()}, directory / "g_s.pt")
    torch.save({"g_ema": g_t.state_dict()}, directory / "g_t.pt")
    m2f.save_pretrained(directory / "mask2former")
    return {"g_s": str(directory / "g_s.pt"), "g_t": str(directory / "g_t.pt"), "m2f": str(directory / "mask2former")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--generator",
        default="tiny",
        choices=["tiny", "paper"],
        help="tiny: 32 px narrow; paper: 256 px, channel_multiplier 2",
    )
    ap.add_argument(
        "--mask2former", default="tiny", choices=["tiny", "swin-base"], help="random Mask2Former of this size"
    )
    ap.add_argument("--random-mask2former", dest="mask2former", choices=["tiny", "swin-base"],
                    help="same as --mask2former: a randomly initialised Mask2Former from a transformers config "
                         "(no download)")  # fmt: skip
    ap.add_argument("--n", type=int, default=64, help="pairs per measurement")
    ap.add_argument("--serial-n", type=int, default=0, help="pairs for the serial loop (default: --n)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--group", type=int, default=0, help="pairs.generator_group (default: --batch)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="Mask2Former precision on CUDA")
    ap.add_argument("--mean-latent-samples", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=3, help="alternating serial / batched measurements (medians reported)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads in-process (0: torch's default)")
    ap.add_argument("--ray-pools", type=int, nargs="*", default=[1, 2])
    ap.add_argument(
        "--ray-threads", type=int, default=0, help="run.torch_threads of the actors (0: cores / actors on CPU)"
    )
    ap.add_argument(
        "--gpus-per-actor", type=float, default=0.0, help="0: the visible GPUs shared by all 2 x pool actors"
    )
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json-out", default="")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    g_s, g_t = build_generators(args.generator)
    m2f = build_mask2former(args.mask2former)
    common = dict(truncation=0.7, mean_latent_samples=args.mean_latent_samples, share_noise=True, device=device)
    scorer = PairScorer.from_scorer(
        SemanticScorer(m2f.to(device), autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None),
        threshold=5.0,
        min_classes=2,
    )
    base = {
        **machine_header(),
        "generator": args.generator,
        "size": g_s.size,
        "mask2former": args.mask2former,
        "device": args.device,
        "precision": args.precision,
    }
    results = []

    def emit(record: dict) -> None:
        row = {**base, **record}
        print(json.dumps(row), flush=True)
        results.append(row)

    seeds = np.arange(args.n, dtype=np.int64)
    serial_seeds = np.arange(args.serial_n or args.n, dtype=np.int64)
    serial_gen = PairGenerator.from_models(g_s, g_t, group=1, **common)
    batched_gen = PairGenerator.from_models(g_s, g_t, group=args.group or args.batch, **common)
    # Serial and batched alternate `repeats` times; medians damp a shared machine's load swings.
    runs: dict[str, list[dict]] = {"serial": [], "batched": []}
    for r in range(args.repeats):
        runs["serial"].append(bench_in_process(serial_gen, scorer, serial_seeds, 1, args.warmup if r == 0 else 0))
        runs["batched"].append(bench_in_process(batched_gen, scorer, seeds, args.batch, args.warmup if r == 0 else 0))
    serial = {k: float(np.median([m[k] for m in runs["serial"]])) for k in runs["serial"][0]}
    batched = {k: float(np.median([m[k] for m in runs["batched"]])) for k in runs["batched"][0]}
    ratios = [b["pairs_per_s"] / s_["pairs_per_s"] for s_, b in zip(runs["serial"], runs["batched"])]
    emit({"mode": "serial", "batch": 1, "n": len(serial_seeds), "repeats": args.repeats, **serial})
    emit({"mode": "batched", "batch": args.batch, "n": args.n, "repeats": args.repeats, **batched,
          "speedup_vs_serial": batched["pairs_per_s"] / serial["pairs_per_s"],
          "speedup_per_repeat": ratios})  # fmt: skip

    if not args.no_ray and args.ray_pools:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            print("# Ray is not installed: skipping the Ray Data measurements", file=sys.stderr)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-pairs-") as d:
                files = write_inputs(Path(d), g_s.cpu(), g_t.cpu(), m2f.cpu())
                for pool in args.ray_pools:
                    r = bench_ray(args, files, pool, args.n)
                    emit({"mode": "ray", "batch": args.batch, "n": args.n, **r,
                          "steady_speedup_vs_serial": r["pairs_per_s_steady"] / serial["pairs_per_s"],
                          "per_actor_speedup_vs_serial":
                              r["pairs_per_s_per_actor_pair"] / serial["pairs_per_s"]})  # fmt: skip
    append_json_lines(args.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
