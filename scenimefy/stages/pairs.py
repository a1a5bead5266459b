"""Stage 2: pseudo pairs (x^p, y^p) = (G_s(w), G_t(w)), scored for segmentation-guided selection.

Paper Sec. 3.2 (pseudo-paired data generation and semantic-consistency selection). Per seed:

    z ~ N(0, I) from torch.Generator().manual_seed(seed);  noise from the same generator
    w = G_s.style(z);  w' = w_mean + psi (w - w_mean)  (w_mean: G_s's mean w of 4,096 z)
    x^p = G_s(w'), y^p = G_t(w')  (same w', and by default the same per-layer noise)
    L_BCE, n_classes = semantic_consistency(Mask2Former(y^p), Mask2Former(x^p))
    keep = L_BCE < 5.0 and n_classes >= 2

This module holds the per-batch work: `PairGenerator` and `PairScorer` are plain callables on
numpy batches (`{"seed": int64[n]}` -> ...), the UDFs of the Ray Data actors in
`scenimefy.distributed.pairs` and, in-process, of the tests and the benchmark. What happens to
the scored pairs on disk (candidate files, the manifest, the exported selection) is
`scenimefy.stages.pair_manifest`; the inspection images are `scenimefy.stages.pair_report`.
No Ray, no MLflow here (see docs/architecture.md).

Reproducibility: a row's z and noise come from its own seed, and the generators run on fixed
groups of `group` consecutive seeds (seed // group), so a row's images do not depend on the
batch size, the sharding or the number of actors. (Float convolutions are not
batch-invariant: the same seed run in batches of different composition differs by ~1e-6,
which flips a few uint8 pixels. Fixed groups make the composition a function of the seed.)
Images are bit-identical for a fixed `group`, thread count and device type.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenimefy.config import PriorsConfig
from scenimefy.data.images import from_uint8, to_uint8
from scenimefy.models.rosinality import build_from_rosinality, load_rosinality_checkpoint
from scenimefy.models.stylegan2 import Generator
from scenimefy.priors.segmentation import SemanticScorer, keep_pair
from scenimefy.stages.device import resolve_device
from scenimefy.stages.host import configure_process

# Re-exported for the callers that import them from this module (commands/pairs.py, distributed/pipeline.py).
from scenimefy.stages.stylegan import resolve_snapshot_path

MEAN_LATENT_SEED = 0  # w_mean's z are drawn from this seed: every actor gets the same w_mean


# ----------------------------------------------------------------------------------------
# Loading G_s and G_t


def generator_file(path: str | os.PathLike, what: str) -> Path:
    """The file of config key `what`: a rosinality-format file, or a stage-0/1 checkpoint
    directory holding its snapshot (`resolve_snapshot_path`). ValueError / FileNotFoundError
    naming the key when it is empty, a directory without a snapshot, or missing."""
    if not str(path):
        raise ValueError(f"{what} is empty: set it to a rosinality-format StyleGAN2 checkpoint (.pt)")
    try:
        file = resolve_snapshot_path(path)
    except ValueError as e:
        raise ValueError(f"{what}={str(path)!r}: {e}") from None
    if not file.is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such file")
    return file


def load_generator(path: str | os.PathLike, what: str) -> Generator:
    """The EMA generator (`g_ema`, else `g`) of a rosinality-format checkpoint, frozen, eval, CPU."""
    file = generator_file(path, what)
    try:
        ckpt = load_rosinality_checkpoint(file)
        reference = ckpt["g_ema"] if ckpt.get("g_ema") is not None else ckpt["g"]
        _, _, g_ema, _ = build_from_rosinality({"g_ema": reference})
    except ValueError as e:
        raise ValueError(f"{what}={str(file)!r}: {e}") from e
    return g_ema.eval().requires_grad_(False)


def load_generator_pair(source: str | os.PathLike, target: str | os.PathLike) -> tuple[Generator, Generator]:
    """(G_s, G_t), checked to share one architecture (G_t is fine-tuned from G_s in stage 1)."""
    g_s = load_generator(source, "pairs.source_checkpoint")
    g_t = load_generator(target, "pairs.target_checkpoint")
    arch_s, arch_t = g_s.architecture(), g_t.architecture()
    if arch_s != arch_t:
        diff = ", ".join(f"{k}: {arch_s[k]} vs {arch_t[k]}" for k in arch_s if arch_s[k] != arch_t.get(k))
        raise ValueError(
            f"G_s ({source}) and G_t ({target}) have different architectures ({diff}); the same w must drive "
            "both, so G_t must be the stage-1 fine-tune of this G_s: pick matching checkpoints"
        )
    return g_s, g_t


def actor_device(device: str, torch_threads: int) -> torch.device:
    """The device of a generator or scorer actor (a CUDA request falls back to the CPU where
    CUDA is absent), with the process's threads set; inference keeps glibc's allocator as is."""
    resolved = resolve_device(device, cpu_fallback=True)
    configure_process(resolved, torch_threads=torch_threads, keep_heap=False)
    return resolved


# ----------------------------------------------------------------------------------------
# Generation: seeds -> pairs


def seed_inputs(seed: int, g_s: Generator, g_t: Generator, *, share_noise: bool) -> tuple[torch.Tensor, list, list]:
    """z (1, D), G_s's noise maps and G_t's, all drawn from one generator seeded by `seed`.

    Order of draws: z, then G_s's noise, then (unless shared) G_t's noise. Drawn on the CPU,
    so a seed gives the same inputs on any device.
    """
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, g_s.style_dim, generator=rng)
    noise_s = g_s.make_noise(1, generator=rng)
    noise_t = noise_s if share_noise else g_t.make_noise(1, generator=rng)
    return z, noise_s, noise_t


class PairGenerator:
    """Holds G_s and G_t and G_s's mean w; maps `{"seed": int64[n]}` to pseudo pairs.

    `__call__` returns `{"seed": int64[n], "photo": uint8 (n, H, W, 3), "anime": uint8 (n, H, W, 3)}`
    with photo = x^p = G_s(w') and anime = y^p = G_t(w'). Built from checkpoint paths (the Ray
    actor form: plain constructor arguments); `from_models` takes modules (tests, benchmark).
    """

    def __init__(
        self,
        source_checkpoint: str,
        target_checkpoint: str,
        *,
        truncation: float,
        mean_latent_samples: int,
        share_noise: bool,
        group: int,
        device: str = "cpu",
        torch_threads: int = 0,
    ):
        device = actor_device(device, torch_threads)
        g_s, g_t = load_generator_pair(source_checkpoint, target_checkpoint)
        self._setup(g_s, g_t, truncation, mean_latent_samples, share_noise, group, device)

    @classmethod
    def from_models(
        cls,
        g_s: Generator,
        g_t: Generator,
        *,
        truncation: float,
        mean_latent_samples: int,
        share_noise: bool,
        group: int,
        device: str | torch.device = "cpu",
    ) -> "PairGenerator":
        self = cls.__new__(cls)
        device = device if isinstance(device, torch.device) else resolve_device(device, cpu_fallback=True)
        self._setup(g_s.eval().requires_grad_(False), g_t.eval().requires_grad_(False), truncation,
                    mean_latent_samples, share_noise, group, device)  # fmt: skip
        return self

    def _setup(self, g_s, g_t, truncation, mean_latent_samples, share_noise, group, device) -> None:
        if group < 1:
            raise ValueError(f"pairs.generator_group={group}: need at least 1")
        self.device = device
        self.g_s, self.g_t = g_s.to(device), g_t.to(device)
        self.truncation = float(truncation)
        self.share_noise = bool(share_noise)
        self.group = int(group)
        # Truncation centre: G_s's mean w (both generators use it; G_t's mapping is never run).
        self.w_mean = self.g_s.mean_latent(
            mean_latent_samples, generator=torch.Generator().manual_seed(MEAN_LATENT_SEED)
        )
        self.size = g_s.size

    @torch.inference_mode()
    def generate(self, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """x^p, y^p (B, 3, H, W) in [-1, 1] for these seeds, computed in one batch (no grouping)."""
        inputs = [seed_inputs(s, self.g_s, self.g_t, share_noise=self.share_noise) for s in seeds]
        z = torch.cat([i[0] for i in inputs]).to(self.device)  # (B, D)
        noise_s = [torch.cat([i[1][j] for i in inputs]) for j in range(self.g_s.num_layers)]  # [(B, 1, r, r)]
        noise_t = (
            noise_s if self.share_noise else [torch.cat([i[2][j] for i in inputs]) for j in range(self.g_t.num_layers)]
        )
        w = self.g_s.get_latent(z)  # (B, D): G_s's mapping drives both generators
        kwargs = dict(input_is_latent=True, truncation=self.truncation, truncation_latent=self.w_mean)
        photo, _ = self.g_s([w], noise=noise_s, **kwargs)
        anime, _ = self.g_t([w], noise=noise_t, **kwargs)
        return photo, anime

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seeds = np.asarray(batch["seed"], dtype=np.int64)
        if seeds.size and seeds.min() < 0:
            raise ValueError(f"seeds must be >= 0, got {int(seeds.min())}")
        n, size = len(seeds), self.size
        photo = np.empty((n, size, size, 3), np.uint8)
        anime = np.empty((n, size, size, 3), np.uint8)
        # Run every group of `group` consecutive seeds that the batch touches, whole.
        for gid in np.unique(seeds // self.group):
            group_seeds = list(range(int(gid) * self.group, (int(gid) + 1) * self.group))
            x, y = self.generate(group_seeds)
            x, y = to_uint8(x), to_uint8(y)  # (group, H, W, 3)
            rows = np.nonzero(seeds // self.group == gid)[0]
            offsets = seeds[rows] - int(gid) * self.group
            photo[rows], anime[rows] = x[offsets], y[offsets]
        return {"seed": seeds, "photo": photo, "anime": anime}


# ----------------------------------------------------------------------------------------
# Selection: pairs -> scores


class PairScorer:
    """Holds a frozen Mask2Former (`SemanticScorer`); adds the selection columns to a batch.

    Input: `{"seed", "photo", "anime"}` as from `PairGenerator`. Output: the same columns plus
    `l_bce` float32, `n_classes` int64, `pixel_agreement` float32, `kept` bool and the label
    maps `photo_labels`, `anime_labels` as uint8 (n, H, W) class ids. One Mask2Former call per
    batch (photos and animes concatenated). Scores are computed from the uint8 images, i.e.
    the pixels of the saved PNGs.
    """

    def __init__(
        self,
        priors: dict[str, Any],
        *,
        threshold: float,
        min_classes: int,
        precision: str,
        device: str = "cpu",
        torch_threads: int = 0,
    ):
        device = actor_device(device, torch_threads)
        scorer = SemanticScorer.from_priors(PriorsConfig(**priors), device, precision=precision)
        self._setup(scorer, threshold, min_classes)

    @classmethod
    def from_scorer(cls, scorer: SemanticScorer, *, threshold: float, min_classes: int) -> "PairScorer":
        self = cls.__new__(cls)
        self._setup(scorer, threshold, min_classes)
        return self

    def _setup(self, scorer: SemanticScorer, threshold: float, min_classes: int) -> None:
        self.scorer, self.threshold, self.min_classes = scorer, float(threshold), int(min_classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = self.scorer.device
        photos = from_uint8(np.array(batch["photo"], copy=True)).to(device)  # (B, 3, H, W); Ray batches are read-only
        animes = from_uint8(np.array(batch["anime"], copy=True)).to(device)
        out = self.scorer.score_pairs(photos, animes)
        kept = keep_pair(out["l_bce"], out["n_classes"], threshold=self.threshold, min_classes=self.min_classes)
        result = dict(batch)
        result.update(
            l_bce=out["l_bce"].float().cpu().numpy(),
            n_classes=out["n_classes"].cpu().numpy().astype(np.int64),
            pixel_agreement=out["pixel_agreement"].float().cpu().numpy(),
            kept=kept.cpu().numpy().astype(bool),
            photo_labels=out["photo_labels"].to(torch.uint8).cpu().numpy(),  # 150 classes fit in uint8
            anime_labels=out["anime_labels"].to(torch.uint8).cpu().numpy(),
        )
        return result


# ----------------------------------------------------------------------------------------
# Streaming until K pairs are kept


def next_chunk_size(
    *,
    target_kept: int,
    num_seen: int,
    num_kept: int,
    min_chunk: int,
    max_chunk: int,
    align: int,
    margin: float = 0.05,
) -> int:
    """Seeds to process next so that about `target_kept` pairs are kept in total; 0 when done.

    The expected need is (target_kept - num_kept) / keep rate, with the running keep rate
    (1.0 before any candidate: never overshoot on a guess) and a small margin, clamped to
    [min_chunk, max_chunk] and rounded up to a multiple of `align`. So the last chunk is sized
    from the measured rate and the stage never runs more than one chunk beyond the need.
    """
    remaining = target_kept - num_kept
    if remaining <= 0:
        return 0
    if num_seen == 0:
        need = remaining
    else:
        rate = num_kept / num_seen if num_kept else 1.0 / (num_seen + 1)
        need = math.ceil(remaining / rate * (1.0 + margin))
    n = min(max(need, min_chunk), max_chunk)
    return max(align, math.ceil(n / align) * align)


# ----------------------------------------------------------------------------------------
# Fingerprint of the settings that decide a candidate's images and scores (resume check)


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()[:16]


def candidate_fingerprint(
    *,
    source: Path,
    target: Path,
    mask2former: str,
    truncation: float,
    mean_latent_samples: int,
    share_noise: bool,
    group: int,
    precision: str,
) -> dict[str, Any]:
    """What a stored candidate depends on besides its seed; a rerun must match it to resume."""
    m2f = Path(mask2former).expanduser()
    m2f_id = file_digest(m2f / "config.json") if (m2f / "config.json").is_file() else mask2former
    return {
        "source_checkpoint": file_digest(source),
        "target_checkpoint": file_digest(target),
        "mask2former": m2f_id,
        "truncation": float(truncation),
        "mean_latent_samples": int(mean_latent_samples),
        "mean_latent_seed": MEAN_LATENT_SEED,
        "share_noise": bool(share_noise),
        "generator_group": int(group),
        "precision": precision,
    }
