"""Scoring a translator with the paper's metrics (docs/method.md), outside the Ray layer.

- FID and KID between translated held-out photos and the anime set (`DistributionMetrics`,
  torchmetrics on the FID Inception-v3 resolved offline by `scenimefy.priors.loading`);
- the semantic consistency L_BCE between each photo and its translation (`SemanticScorer`,
  Mask2Former; paper Table 4 reports its mean);
- the tuning objective FID + evaluate.bce_weight * L_BCE.

`EpochEvaluator` (built by `make_epoch_evaluator(cfg)`) is what rank 0 of a training run
calls at epoch ends (`WorkerContext.evaluate`): it translates a fixed held-out subset with
the current generator and returns {"fid", "kid", "l_bce", "pixel_agreement", "objective"}.
Inception and Mask2Former load at the first call; the anime features are computed once.

The rest are helpers of `scenimefy evaluate` (the driver is `scenimefy.distributed.evaluate`,
which scores L_BCE on Ray Data actors): listing the held-out photos, pairing photos with
translations, summarising per-image scores. No Ray and no MLflow here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scenimefy.config import Config, EvaluateConfig, PriorsConfig
from scenimefy.data.decode import ImageDecodeError, list_image_files, load_image, resize_square
from scenimefy.data.images import from_uint8
from scenimefy.evaluation.metrics import DistributionMetrics, check_matched_counts, image_batches

# Metrics a tuning run may optimise (all lower-is-better); "kid" is KID's mean over subsets.
TUNABLE_METRICS = ("objective", "fid", "kid", "l_bce")


# ----------------------------------------------------------------------------------------
# The objective


def tuning_objective(fid: float | None, l_bce: float | None, *, bce_weight: float) -> float:
    """FID + bce_weight * L_BCE; a term whose metric is switched off (None) is left out."""
    if fid is None and l_bce is None:
        raise ValueError("the objective needs FID or L_BCE: set evaluate.fid=true or evaluate.semantic=true")
    return (fid if fid is not None else 0.0) + (bce_weight * l_bce if l_bce is not None else 0.0)


# ----------------------------------------------------------------------------------------
# Inputs: held-out photos, the anime reference, photo <-> translation pairs


def held_out_photos(ev: EvaluateConfig) -> list[str]:
    """The first `evaluate.max_images` photos of `evaluate.photos` (recursive, sorted; 0 = all)."""
    if not ev.photos:
        raise ValueError("no held-out photos to evaluate: set evaluate.photos=DIR (test photos, not the training set)")
    try:
        files = list_image_files(ev.photos)
    except FileNotFoundError:
        raise ValueError(f"evaluate.photos={ev.photos!r} does not exist") from None
    if not files:
        raise ValueError(
            f"evaluate.photos={ev.photos!r} holds no images (searched recursively); point it at the test photos"
        )
    if ev.max_images < 0:
        raise ValueError(f"evaluate.max_images={ev.max_images}: expected >= 0 (0 = all photos)")
    return files[: ev.max_images] if ev.max_images else files


def anime_reference(cfg: Config) -> list[str]:
    """The anime images FID/KID compare against: evaluate.anime, else data.anime."""
    folder = cfg.evaluate.anime or cfg.data.anime
    if not folder:
        raise ValueError("no anime reference set for FID/KID: set evaluate.anime=DIR (or data.anime)")
    try:
        files = list_image_files(folder)
    except FileNotFoundError:
        raise ValueError(f"anime reference folder {folder!r} does not exist (evaluate.anime / data.anime)") from None
    if len(files) < 2:
        raise ValueError(f"anime reference folder {folder!r} holds {len(files)} image(s); FID/KID need at least 2")
    return files


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def pair_by_stem(photos: Sequence[str], translations: Sequence[str], *, subset: bool = False) -> list[tuple[str, str]]:
    """(photo, translation) pairs matched by file stem, in photo order.

    subset=True first drops translations of photos not in `photos` (the held-out subset is
    cut by evaluate.max_images). Any remaining mismatch (a photo without a translation, an
    extra or duplicated name) is a ValueError listing the names (`check_matched_counts`).
    """
    if not translations:
        raise ValueError("the translations folder holds no images")
    if subset:
        wanted = {_stem(p) for p in photos}
        translations = [t for t in translations if _stem(t) in wanted]
    check_matched_counts(photos, translations)
    by_stem = {_stem(t): t for t in translations}
    return [(p, by_stem[_stem(p)]) for p in photos]


# ----------------------------------------------------------------------------------------
# Per-image scores -> summary


def summarize_semantic(l_bce: Sequence[float], pixel_agreement: Sequence[float]) -> dict[str, float | int]:
    """Mean and spread of the per-image L_BCE (NaN rows = unreadable images, excluded)."""
    values = np.asarray(l_bce, dtype=np.float64)
    agree = np.asarray(pixel_agreement, dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        raise ValueError("no photo/translation pair could be scored (all unreadable)")
    return {
        "l_bce": float(values[ok].mean()),
        "l_bce_std": float(values[ok].std()),
        "pixel_agreement": float(agree[ok].mean()),
        "num_scored": int(ok.sum()),
        "num_unscored": int((~ok).sum()),
    }


# ----------------------------------------------------------------------------------------
# Evaluation during training (rank 0, every evaluate.every_epochs epochs)


def _decode_square(paths: Sequence[str], size: int) -> tuple[np.ndarray, list[str]]:
    """(N, size, size, 3) uint8 of the readable images, and the paths that could not be read."""
    arrays, skipped = [], []
    for path in paths:
        try:
            arrays.append(resize_square(load_image(path), size))
        except (ImageDecodeError, OSError):
            skipped.append(path)
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return stacked, skipped


class EpochEvaluator:
    """Scores a generator on a fixed held-out subset: FID, KID, L_BCE and the objective.

    photos: held-out photo files (translated at size x size); anime: reference files (FID).
    Exactly the metrics switched on in `ev` are computed. `feature_extractor` / `scorer`
    replace the Inception network / Mask2Former (tests; tiny random networks). Nothing is
    loaded until the first call; the networks then live on the generator's device.
    """

    def __init__(
        self,
        ev: EvaluateConfig,
        priors: PriorsConfig,
        *,
        photos: Sequence[str],
        anime: Sequence[str],
        segmenter_precision: str,
        feature_extractor: nn.Module | None = None,
        scorer: nn.Module | None = None,
    ) -> None:
        if not (ev.fid or ev.semantic):
            raise ValueError("evaluation needs a metric: set evaluate.fid=true and/or evaluate.semantic=true")
        if ev.fid and len(photos) < 2:
            raise ValueError(f"FID/KID need at least 2 held-out photos, evaluate.photos gives {len(photos)}")
        if ev.size % 4 or ev.size < 8:
            raise ValueError(f"evaluate.size={ev.size}: expected a multiple of 4, at least 8 (the generator's input)")
        if ev.batch_size < 1:
            raise ValueError(f"evaluate.batch_size={ev.batch_size}: expected >= 1")
        self.ev, self.priors = ev, priors
        self.photo_paths, self.anime_paths = list(photos), list(anime)
        self.segmenter_precision = segmenter_precision
        self._feature_extractor, self._scorer = feature_extractor, scorer
        self._photos: Tensor | None = None  # uint8 (N, 3, S, S) on the CPU
        self._metrics: DistributionMetrics | None = None  # holds the anime features
        self.skipped: list[str] = []

    # -- lazy set-up (first call, on the generator's device)

    def _setup(self, device: torch.device) -> None:
        ev = self.ev
        photos, self.skipped = _decode_square(self.photo_paths, ev.size)
        if len(photos) < (2 if ev.fid else 1):
            raise ValueError(f"only {len(photos)} of the {len(self.photo_paths)} held-out photos are readable")
        self._photos = torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
        if ev.fid:
            if self._feature_extractor is not None:
                self._metrics = DistributionMetrics(feature_extractor=self._feature_extractor, device=device)
            else:
                self._metrics = DistributionMetrics(self.priors, device=device)
            for batch in image_batches(self.anime_paths, size=ev.size, batch_size=ev.batch_size):
                self._metrics.update(batch, real=True)
            if self._metrics.num_real < 2:
                raise ValueError(f"fewer than 2 readable anime reference images among {len(self.anime_paths)}")
        if ev.semantic and self._scorer is None:
            from scenimefy.priors.segmentation import SemanticScorer

            self._scorer = SemanticScorer.from_priors(self.priors, device, precision=self.segmenter_precision)
        elif ev.semantic:
            self._scorer = self._scorer.to(device)

    # -- one evaluation

    @torch.no_grad()
    def __call__(self, generator: nn.Module, epoch: int) -> dict[str, float]:
        """Translate the held-out photos with `generator` and score them (its mode is restored)."""
        started = time.perf_counter()
        device = next(generator.parameters()).device
        if self._photos is None:
            self._setup(device)
        ev = self.ev
        if self._metrics is not None:
            self._metrics.reset(keep_real=True)
        l_bce, agreement = [], []
        was_training = generator.training
        generator.eval()
        try:
            for chunk in self._photos.split(ev.batch_size):
                x = from_uint8(chunk.permute(0, 2, 3, 1)).to(device)  # (B, 3, S, S) in [-1, 1]
                y = generator(x).float().clamp(-1.0, 1.0)
                if self._metrics is not None:
                    self._metrics.update(y, real=False)
                if ev.semantic:
                    scores = self._scorer.score_pairs(x, y)
                    l_bce.append(scores["l_bce"].float().cpu())
                    agreement.append(scores["pixel_agreement"].float().cpu())
        finally:
            generator.train(was_training)

        out: dict[str, float] = {}
        if self._metrics is not None:
            dist = self._metrics.compute()
            out.update(fid=float(dist["fid"]), kid=float(dist["kid_mean"]))
        if ev.semantic:
            out.update(l_bce=float(torch.cat(l_bce).mean()), pixel_agreement=float(torch.cat(agreement).mean()))
        out["objective"] = tuning_objective(out.get("fid"), out.get("l_bce"), bce_weight=ev.bce_weight)
        out["eval_seconds"] = time.perf_counter() - started
        if not all(math.isfinite(v) for v in out.values()):
            print(f"[evaluate] epoch {epoch}: non-finite metrics {out}", flush=True)
        return out


def make_epoch_evaluator(
    cfg: Config,
    *,
    feature_extractor: nn.Module | None = None,
    scorer: nn.Module | None = None,
) -> Callable[[nn.Module, int], dict[str, float]] | None:
    """The `WorkerContext.evaluate` of a training run, or None when evaluation is off.

    Off when evaluate.every_epochs is 0 or evaluate.photos is empty. Lists the held-out
    photos (first evaluate.max_images) and the anime reference now, so a wrong folder fails
    before training; decodes and loads networks at the first call (rank 0 only calls it).
    Mask2Former runs at pairs.precision, the segmenter's setting in stage 2.
    """
    ev = cfg.evaluate
    if ev.every_epochs <= 0 or not ev.photos:
        return None
    photos = held_out_photos(ev)
    anime = anime_reference(cfg) if ev.fid else []
    return EpochEvaluator(
        ev,
        cfg.priors,
        photos=photos,
        anime=anime,
        segmenter_precision=cfg.pairs.precision,
        feature_extractor=feature_extractor,
        scorer=scorer,
    )
