"""Stage 2: pseudo pairs (x^p, y^p) = (G_s(w), G_t(w)) and segmentation-guided selection.

SPEC.md "Stage 2", REFERENCE.md 3.1 and 3.6. Per seed:

    z ~ N(0, I) from torch.Generator().manual_seed(seed);  noise from the same generator
    w = G_s.style(z);  w' = w_mean + psi (w - w_mean)  (w_mean: G_s's mean w of 4,096 z)
    x^p = G_s(w'), y^p = G_t(w')  (same w', and by default the same per-layer noise)
    L_BCE, n_classes = semantic_consistency(Mask2Former(y^p), Mask2Former(x^p))
    keep = L_BCE < 5.0 and n_classes >= 2

The pieces are plain callables on numpy batches (`{"seed": int64[n]}` -> ...), so the same
code runs in-process (tests, the benchmark) and as Ray Data actor UDFs
(`scenimefy.distributed.pairs`). No Ray, no MLflow here.

Reproducibility: a row's z and noise come from its own seed, and the generators run on fixed
groups of `group` consecutive seeds (seed // group), so a row's images do not depend on the
batch size, the sharding or the number of actors. (Float convolutions are not
batch-invariant: the same seed run in batches of different composition differs by ~1e-6,
which flips a few uint8 pixels. Fixed groups make the composition a function of the seed.)
Images are bit-identical for a fixed `group`, thread count and device type.

On disk (`root` = the stage-2 folder):

    candidates/photo/<seed:08d>.png          x^p of every candidate
    candidates/anime/<seed:08d>.png          y^p
    candidates/photo_labels/<seed:08d>.png   argmax_c S_x^p as uint8 class ids (ADE20k order)
    candidates/anime_labels/<seed:08d>.png   argmax_c S_y^p
    manifest.parquet                         one row per candidate (MANIFEST_COLUMNS)
    selected/trainA/<seed:08d>.png           kept x^p  } the translator's `data.pairs` layout,
    selected/trainB/<seed:08d>.png           kept y^p  } matched by file name

A new threshold is a filter over the manifest (`materialize_selection`): nothing is
regenerated or resegmented.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenimefy.config import PriorsConfig
from scenimefy.data.images import atomic_path, from_uint8, image_grid, save_image_atomic, to_uint8
from scenimefy.models.rosinality import build_from_rosinality, load_rosinality_checkpoint
from scenimefy.models.stylegan2 import Generator
from scenimefy.priors.segmentation import SemanticScorer, colorize_labels, keep_pair
from scenimefy.stages.checkpoint import STYLEGAN_SNAPSHOT_FILE
from scenimefy.stages.host import configure_process

MEAN_LATENT_SEED = 0  # w_mean's z are drawn from this seed: every actor gets the same w_mean
MANIFEST_FILE = "manifest.parquet"
GRID_MIN_SIDE = 96  # inspection grids enlarge smaller images to this many pixels
SELECTED_DIR = "selected"
CANDIDATE_DIRS = ("photo", "anime", "photo_labels", "anime_labels")
MANIFEST_COLUMNS = (
    "seed",  # int64: the row's seed (z and noise)
    "l_bce",  # float32: semantic-consistency cross-entropy (SPEC.md; "L_BCE" in the paper)
    "n_classes",  # int64: distinct ADE20k classes in the photo's label map
    "pixel_agreement",  # float32: fraction of pixels whose photo and anime labels agree
    "kept",  # bool: keep rule at the threshold of the run that wrote the manifest
    "photo_path",  # str: paths relative to the manifest's folder
    "anime_path",
    "photo_labels_path",
    "anime_labels_path",
)


# ----------------------------------------------------------------------------------------
# Loading G_s and G_t


def resolve_generator_path(path: str | os.PathLike, what: str) -> Path:
    """A rosinality-format file, or a stage-0/1 checkpoint directory holding `stylegan.pt`."""
    if not str(path):
        raise ValueError(f"{what} is empty: set it to a rosinality-format StyleGAN2 checkpoint (.pt)")
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / STYLEGAN_SNAPSHOT_FILE).is_file():
            raise ValueError(
                f"{what}={str(path)!r} is a directory without {STYLEGAN_SNAPSHOT_FILE}: pass the checkpoint file"
            )
        return p / STYLEGAN_SNAPSHOT_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such file")
    return p


def load_generator(path: str | os.PathLike, what: str) -> Generator:
    """The EMA generator (`g_ema`, else `g`) of a rosinality-format checkpoint, frozen, eval, CPU."""
    file = resolve_generator_path(path, what)
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


def resolve_device(device: str) -> torch.device:
    """ "cuda" falls back to CPU where CUDA is absent (Ray's fake GPUs in tests, RAY.md 3.3)."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if device.startswith("cuda:") and torch.cuda.is_available():
        return torch.device(device)
    return torch.device("cpu")


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
        configure_process(
            resolve_device(device), torch_threads=torch_threads, keep_heap=False
        )  # inference: glibc as it comes
        g_s, g_t = load_generator_pair(source_checkpoint, target_checkpoint)
        self._setup(g_s, g_t, truncation, mean_latent_samples, share_noise, group, resolve_device(device))

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
        device = device if isinstance(device, torch.device) else resolve_device(device)
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
        configure_process(
            resolve_device(device), torch_threads=torch_threads, keep_heap=False
        )  # inference: glibc as it comes
        scorer = SemanticScorer.from_priors(PriorsConfig(**priors), resolve_device(device), precision=precision)
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


def score_seeds(
    generator: PairGenerator, scorer: PairScorer, seeds: Sequence[int], *, batch_size: int
) -> Iterator[dict]:
    """The stage in-process: batches of scored pairs for `seeds` (tests, the benchmark)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    for start in range(0, len(seeds), batch_size):
        yield scorer(generator({"seed": seeds[start : start + batch_size]}))


# ----------------------------------------------------------------------------------------
# Candidates on disk and the manifest


def candidate_relpaths(seed: int) -> dict[str, str]:
    name = f"{int(seed):08d}.png"
    return {f"{kind}_path": f"candidates/{kind}/{name}" for kind in CANDIDATE_DIRS}


def disk_full_error(error: OSError, where: str | os.PathLike) -> ValueError:
    free = _free_bytes(where)
    return ValueError(
        f"no space left on the device holding {where} ({free / 2**20:.0f} MiB free): free some space or set "
        "run.output_dir to another disk; complete files are kept and a rerun resumes"
    )


def write_candidates(batch: dict[str, np.ndarray], *, root: str) -> dict[str, np.ndarray]:
    """Write each row's photo, anime and label maps as PNGs under root/candidates (atomically);
    return the manifest columns (no images). A Ray Data task UDF."""
    seeds = np.asarray(batch["seed"], dtype=np.int64)
    paths: dict[str, list[str]] = {f"{kind}_path": [] for kind in CANDIDATE_DIRS}
    try:
        for i, seed in enumerate(seeds):
            rel = candidate_relpaths(int(seed))
            for kind in CANDIDATE_DIRS:
                save_image_atomic(os.path.join(root, rel[f"{kind}_path"]), np.asarray(batch[kind][i]))
                paths[f"{kind}_path"].append(rel[f"{kind}_path"])
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, root) from e
        raise
    return {
        "seed": seeds,
        "l_bce": np.asarray(batch["l_bce"], np.float32),
        "n_classes": np.asarray(batch["n_classes"], np.int64),
        "pixel_agreement": np.asarray(batch["pixel_agreement"], np.float32),
        "kept": np.asarray(batch["kept"], bool),
        **{k: np.asarray(v, dtype=object) for k, v in paths.items()},
    }


def manifest_frame(rows: Iterable[dict[str, np.ndarray]]):
    """Concatenate manifest batches into one DataFrame sorted by seed."""
    import pandas as pd

    frames = [pd.DataFrame({c: b[c] for c in MANIFEST_COLUMNS}) for b in rows if len(b["seed"])]
    if not frames:
        empty = {
            "seed": np.int64,
            "l_bce": np.float32,
            "n_classes": np.int64,
            "pixel_agreement": np.float32,
            "kept": bool,
        }
        return pd.DataFrame({c: np.empty(0, dtype=empty.get(c, object)) for c in MANIFEST_COLUMNS})
    return pd.concat(frames, ignore_index=True).sort_values("seed", kind="stable").reset_index(drop=True)


def write_parquet_atomic(df, path: str | os.PathLike) -> str:
    """One Parquet file, written to a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, Path(path).parent) from e
        raise
    return str(path)


def read_manifest(path: str | os.PathLike):
    """(manifest DataFrame sorted by seed, the folder its relative paths start from).

    `path`: the manifest.parquet file, or the stage folder that holds it.
    """
    import pandas as pd

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / MANIFEST_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"manifest {str(p)!r} does not exist: run `scenimefy pairs` first, or pass its manifest.parquet"
        )
    try:
        df = pd.read_parquet(p)
    except Exception as e:  # noqa: BLE001 - any reader failure: not a manifest
        raise ValueError(f"{str(p)!r} is not a readable Parquet manifest: {type(e).__name__}: {e}") from e
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{str(p)!r} is not a stage-2 manifest: missing columns {missing}")
    return df.sort_values("seed", kind="stable").reset_index(drop=True), p.parent


def select_from_manifest(manifest, *, threshold: float, min_classes: int):
    """The manifest with `kept` recomputed for this threshold and class minimum (a copy).

    The rule is `segmentation.keep_pair` on the stored scores: no image is read.
    """
    df = manifest.copy()
    kept = keep_pair(
        torch.from_numpy(df["l_bce"].to_numpy(np.float32, copy=True)),
        torch.from_numpy(df["n_classes"].to_numpy(np.int64, copy=True)),
        threshold=threshold,
        min_classes=min_classes,
    )
    df["kept"] = kept.numpy().astype(bool)
    return df


def describe_scores(manifest) -> str:
    """L_BCE quantiles and the class-count histogram, in one line (for errors and logs)."""
    l = manifest["l_bce"].to_numpy(np.float64)
    if l.size == 0:
        return "no candidates scored"
    qs = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
    quant = ", ".join(f"{int(q * 100)}%: {v:.4f}" for q, v in zip(qs, np.quantile(l, qs)))
    values, counts = np.unique(manifest["n_classes"].to_numpy(np.int64), return_counts=True)
    hist = ", ".join(f"{v}: {c}" for v, c in zip(values, counts))
    return f"{l.size} candidates; L_BCE quantiles {quant}; photos with n classes {{{hist}}}"


def nothing_kept_error(manifest, *, threshold: float, min_classes: int, manifest_path: str = "") -> ValueError:
    where = f" --manifest {manifest_path}" if manifest_path else ""
    return ValueError(
        f"no pair has L_BCE < {threshold} and at least {min_classes} classes: {describe_scores(manifest)}. "
        f"Pick a threshold inside the distribution (`scenimefy select{where} --threshold T`) or check the generators"
    )


# ----------------------------------------------------------------------------------------
# Exporting the kept pairs in the translator's layout


def _free_bytes(path: str | os.PathLike) -> int:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk_space(directory: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise ValueError before writing when the disk holding `directory` lacks `needed_bytes`."""
    free = _free_bytes(directory)
    if free < needed_bytes:
        raise ValueError(
            f"not enough disk space for {what} under {directory}: need about {needed_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free; free some space or set run.output_dir to another disk"
        )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the candidates are immutable: a hard link costs no space
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        shutil.copyfile(src, dst)


def export_pairs(rows: Iterable[tuple[int, str, str]], out_dir: str | os.PathLike, *, info: dict | None = None) -> int:
    """Write `out_dir/trainA/<seed:08d>.png` (x^p) and `trainB/<seed:08d>.png` (y^p), all or nothing.

    `rows`: (seed, photo file, anime file). Files go into a hidden temporary folder beside
    `out_dir`, which then replaces `out_dir` by rename; on any error the temporary folder is
    removed and a previous `out_dir` is left as it was. `info` is saved as
    `out_dir/selection.json` (with the count). Returns the number of pairs.
    """
    out = Path(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    count = 0
    try:
        (tmp / "trainA").mkdir(parents=True)
        (tmp / "trainB").mkdir()
        for seed, photo, anime in rows:
            name = f"{int(seed):08d}.png"
            _link_or_copy(str(photo), str(tmp / "trainA" / name))
            _link_or_copy(str(anime), str(tmp / "trainB" / name))
            count += 1
        (tmp / "selection.json").write_text(json.dumps({**(info or {}), "pairs": count}, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise disk_full_error(e, out.parent) from e
        raise
    return count


def _replace_dir(new: Path, dst: Path) -> None:
    """Rename `new` onto `dst`; an existing `dst` is moved aside first and deleted after."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def materialize_selection(
    manifest_path: str | os.PathLike,
    *,
    threshold: float,
    min_classes: int,
    out_dir: str | os.PathLike,
    limit: int = 0,
) -> dict[str, Any]:
    """Export the pairs kept at this threshold from the stored candidates (no segmentation).

    `limit` > 0 keeps only the first `limit` kept pairs by seed (the streaming mode's K).
    Raises ValueError naming the score distribution when nothing is kept. Returns counts and
    paths: {"candidates", "kept", "exported", "keep_rate", "threshold", "min_classes", "out_dir"}.
    """
    df, root = read_manifest(manifest_path)
    df = select_from_manifest(df, threshold=threshold, min_classes=min_classes)
    kept = df[df["kept"]]
    if kept.empty:
        raise nothing_kept_error(df, threshold=threshold, min_classes=min_classes, manifest_path=str(manifest_path))
    if limit > 0:
        kept = kept.iloc[:limit]
    missing = [p for p in kept["photo_path"].tolist() + kept["anime_path"].tolist() if not (root / p).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} candidate image(s) listed in the manifest are missing under {root} (e.g. {missing[0]}); "
            "rerun `scenimefy pairs` with the same run name to regenerate them"
        )
    if os.stat(root).st_dev != os.stat(_existing_parent(out_dir)).st_dev:  # no hard links: real copies
        sizes = sum((root / p).stat().st_size for p in kept["photo_path"].tolist() + kept["anime_path"].tolist())
        check_disk_space(out_dir, int(sizes * 1.05), "the selected pairs")
    rows = ((s, root / a, root / b) for s, a, b in zip(kept["seed"], kept["photo_path"], kept["anime_path"]))
    info = {
        "manifest": str((root / MANIFEST_FILE).absolute()),
        "threshold": float(threshold),
        "min_classes": int(min_classes),
        "limit": int(limit),
        "candidates": int(len(df)),
        "kept": int(df["kept"].sum()),
    }
    exported = export_pairs(rows, out_dir, info=info)
    return {
        "candidates": int(len(df)),
        "kept": int(df["kept"].sum()),
        "exported": exported,
        "keep_rate": float(df["kept"].mean()),
        "threshold": float(threshold),
        "min_classes": int(min_classes),
        "out_dir": str(Path(out_dir).absolute()),
        "seeds": kept["seed"].to_numpy(np.int64),
    }


def _existing_parent(path: str | os.PathLike) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


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
# Inspection


def load_candidate_rows(manifest, root: str | os.PathLike, seeds: Iterable[int]) -> list[dict[str, Any]]:
    """Rows with their images read back from root/candidates (for the inspection grid)."""
    from PIL import Image

    by_seed = manifest.set_index("seed")
    rows = []
    for seed in seeds:
        r = by_seed.loc[int(seed)]
        read = lambda rel: np.asarray(Image.open(Path(root) / rel))  # noqa: E731
        rows.append(
            {
                "seed": int(seed),
                "l_bce": float(r["l_bce"]),
                "n_classes": int(r["n_classes"]),
                "pixel_agreement": float(r["pixel_agreement"]),
                "kept": bool(r["kept"]),
                "photo": read(r["photo_path"]),
                "anime": read(r["anime_path"]),
                "photo_labels": read(r["photo_labels_path"]),
                "anime_labels": read(r["anime_labels_path"]),
            }
        )
    return rows


def inspection_grid(rows: Sequence[dict[str, Any]], n_kept: int, n_rejected: int) -> np.ndarray:
    """Kept then rejected pairs, one per grid row: x^p | its labels | y^p | its labels.

    `rows`: dicts with seed, l_bce, n_classes, kept and the uint8 images photo, anime (H, W, 3)
    and label maps photo_labels, anime_labels (H, W). The first `n_kept` kept and `n_rejected`
    rejected rows are shown; each row is labelled with its verdict, seed, L_BCE and class count.
    Images smaller than GRID_MIN_SIDE are enlarged (nearest) so the labels fit. Returns an
    (H', W', 3) uint8 image.
    """
    kept = [r for r in rows if r["kept"]][:n_kept]
    rejected = [r for r in rows if not r["kept"]][:n_rejected]
    chosen = kept + rejected
    if not chosen:
        raise ValueError("inspection_grid: no rows to show")
    scale = max(1, math.ceil(GRID_MIN_SIDE / np.asarray(chosen[0]["photo"]).shape[0]))  # small images: nearest upscale
    up = lambda a: np.repeat(np.repeat(np.asarray(a), scale, axis=0), scale, axis=1)  # noqa: E731
    cells = [
        [up(r["photo"]), up(colorize_labels(np.asarray(r["photo_labels"]).astype(np.int64))),
         up(r["anime"]), up(colorize_labels(np.asarray(r["anime_labels"]).astype(np.int64)))]
        for r in chosen
    ]  # fmt: skip
    labels = [
        f"{'kept' if r['kept'] else 'rejected'} {r['seed']}\nL_BCE {r['l_bce']:.3f}\n{r['n_classes']} classes"
        for r in chosen
    ]
    return image_grid(cells, row_labels=labels, col_labels=["x^p", "x^p labels", "y^p", "y^p labels"])


def plot_score_histogram(manifest, *, threshold: float, path: str | os.PathLike) -> str:
    """L_BCE histogram of kept and rejected candidates with the threshold, and the class-count
    histogram, as a PNG (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    l = manifest["l_bce"].to_numpy(np.float64)
    kept = manifest["kept"].to_numpy(bool)
    bins = np.linspace(min(l.min(), threshold) - 1e-3, max(l.max(), threshold) + 1e-3, 41) if l.size else 10
    ax1.hist([l[kept], l[~kept]], bins=bins, stacked=True, label=["kept", "rejected"], color=["tab:green", "tab:red"])
    ax1.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax1.set_xlabel("L_BCE (semantic-consistency cross-entropy)")
    ax1.set_ylabel("candidates")
    ax1.set_title(f"keep rate {kept.mean() if kept.size else 0:.1%} of {kept.size}")
    ax1.legend(fontsize=8)
    n = manifest["n_classes"].to_numpy(np.int64)
    if n.size:
        ax2.hist(n, bins=np.arange(0.5, n.max() + 1.5, 1.0), color="tab:blue")
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_xlabel("ADE20k classes in x^p")
    ax2.set_ylabel("candidates")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return str(path)


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
