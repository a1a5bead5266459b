"""Image-distribution metrics: FID (paper Table 1) and KID, between anime and translated images.

`DistributionMetrics` accumulates the real set (the anime reference) and the generated set
(translated test photos) batch by batch, then `compute()` returns FID and KID. The metrics
themselves are torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance`; the
network is the FID Inception-v3 (the TF-ported `pt_inception-2015-12-05` weights, resolved
offline and checked against their SHA-256 by `scenimefy.priors.loading.inception_for_use`), run
as torch-fidelity runs it: uint8 input, TF1-compatible bilinear resize to 299 (no antialiasing), 2048-d pool3 features.

Each image goes through the network once: features are stored here (KID needs all of them
anyway, about 8 KB per image at 2048-d) and both torchmetrics metrics are built at
`compute()` time on these features, through a pass-through `feature` module. This also lets
KID's subset size follow the number of images (torchmetrics requires subset_size <= samples).

Recommended protocol (docs/method.md): translated test images at their native 256 x 256,
the anime reference resized to 256 x 256 with PIL bicubic (`size=256`); report the choice.

No Ray and no MLflow here; torchmetrics is imported only when a metric is computed.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scenimefy.config import PriorsConfig
from scenimefy.data.decode import ImageDecodeError, load_image, resize_square
from scenimefy.priors.loading import inception_for_use

KID_MAX_SUBSET_SIZE = 1000  # the usual KID subset size (Binkowski et al.; torchmetrics' default)
KID_SUBSETS = 100  # subsets averaged for kid_mean / kid_std (torchmetrics' default)
FLOAT_RANGE_TOLERANCE = 1e-2  # float images may overshoot [-1, 1] by this much (bf16 rounding)


# ----------------------------------------------------------------------------------------
# Images -> uint8 (B, 3, H, W)


def as_uint8_images(images: Tensor | np.ndarray) -> Tensor:
    """One batch of images as a uint8 (B, 3, H, W) tensor, on the input's device.

    Accepted: torch tensors (B, 3, H, W) and numpy arrays (B, H, W, 3) (the layout of
    `scenimefy.data.images`); uint8, any integer dtype with values in 0..255, or floats in
    [-1, 1], which are clamped and mapped by round((v + 1) * 127.5) (rounded, not
    truncated). Floats in [0, 1] cannot be told apart from [-1, 1] data: convert them first.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be (B, H, W, 3), got shape {images.shape}")
        array = np.ascontiguousarray(images)
        if not array.flags.writeable:  # e.g. np.asarray(PIL image): torch wants writable memory
            array = array.copy()
        t = torch.from_numpy(array).permute(0, 3, 1, 2)  # (B, 3, H, W)
    elif isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be (B, 3, H, W), got shape {tuple(images.shape)}")
        t = images.detach()
    else:
        raise TypeError(f"images must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}")

    if t.dtype == torch.uint8:
        return t.contiguous()
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"images must be uint8, integer 0..255 or float in [-1, 1], got {t.dtype}")
    if t.numel() == 0:
        return t.to(torch.uint8)
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            raise ValueError("float images contain NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1.0 - FLOAT_RANGE_TOLERANCE or hi > 1.0 + FLOAT_RANGE_TOLERANCE:
            raise ValueError(
                f"float images must be in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]; pass uint8 for 0..255 data"
            )
        v = t.float().clamp(-1.0, 1.0)
        return torch.round((v + 1.0) * 127.5).to(torch.uint8).contiguous()
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"integer images must be in 0..255, got values in [{lo}, {hi}] ({t.dtype})")
    return t.to(torch.uint8).contiguous()


# ----------------------------------------------------------------------------------------
# Feature extractors


def load_fid_inception(cfg: PriorsConfig, feature: int = 2048, antialias: bool = False) -> nn.Module:
    """The frozen FID Inception-v3 on cfg's local weights: uint8 (B, 3, H, W) -> (B, feature).

    The network of `priors.make_fid_metric` (torchmetrics' NoTrainInceptionV3 on the file
    `priors.inception_for_use` resolves and verifies), for KID too: torchmetrics' KID has no weights-path
    argument. antialias=False keeps torch-fidelity's TF1-compatible resize (standard FID).
    feature: 64, 192, 768 or 2048 (pool3, the standard).
    """
    from torchmetrics.image.fid import NoTrainInceptionV3

    valid = (64, 192, 768, 2048)
    if feature not in valid:
        raise ValueError(f"Inception feature={feature!r}: expected one of {valid} (2048 is the standard FID)")
    weights = inception_for_use(cfg)
    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(feature)],
        feature_extractor_weights_path=str(weights),
        antialias=antialias,
    )


class _Precomputed(nn.Module):
    """The `feature` module handed to torchmetrics: the features are computed already."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by FrechetInceptionDistance instead of a dummy pass

    def forward(self, features: Tensor) -> Tensor:
        return features


# ----------------------------------------------------------------------------------------
# FID and KID


class DistributionMetrics:
    """FID and KID between a real (anime reference) and a generated (translated) image set.

    Give either `priors` (the FID Inception from its local weights, `feature`-d features) or
    `feature_extractor`: any module mapping uint8 (B, 3, H, W) to (B, D) features (tests,
    custom networks), with `num_features=D` (else D is read from the first batch).

        metrics = DistributionMetrics(priors_cfg, device="cuda")
        for batch in image_batches(anime, size=256, batch_size=64): metrics.update(batch, real=True)
        for batch in image_batches(translated, size=None, batch_size=64): metrics.update(batch, real=False)
        metrics.compute()  # {"fid", "kid_mean", "kid_std", "kid_subset_size", "num_real", "num_fake"}

    KID averages `kid_subsets` subsets of min(kid_max_subset_size, num_real, num_fake)
    images each, drawn from a generator seeded with `kid_seed` (so compute() is repeatable).
    """

    def __init__(
        self,
        priors: PriorsConfig | None = None,
        *,
        feature_extractor: nn.Module | None = None,
        num_features: int | None = None,
        feature: int = 2048,
        device: str | torch.device = "cpu",
        kid_max_subset_size: int = KID_MAX_SUBSET_SIZE,
        kid_subsets: int = KID_SUBSETS,
        kid_seed: int = 0,
    ) -> None:
        if (priors is None) == (feature_extractor is None):
            raise ValueError("DistributionMetrics: give exactly one of `priors` or `feature_extractor`")
        if kid_max_subset_size < 2 or kid_subsets < 1:
            raise ValueError(
                f"kid_max_subset_size must be >= 2 and kid_subsets >= 1, got {kid_max_subset_size} and {kid_subsets}"
            )
        if priors is not None:
            feature_extractor = load_fid_inception(priors, feature=feature)
            num_features = feature
        self.device = torch.device(device)
        self.feature_extractor = feature_extractor.eval().requires_grad_(False).to(self.device)
        self.num_features = num_features
        self.kid_max_subset_size = kid_max_subset_size
        self.kid_subsets = kid_subsets
        self.kid_seed = kid_seed
        self._features: dict[bool, list[Tensor]] = {True: [], False: []}  # real -> [(B, D)]

    # -- accumulation

    @torch.no_grad()
    def update(self, images: Tensor | np.ndarray, *, real: bool) -> None:
        """Add a batch: uint8 (B, 3, H, W) tensor, (B, H, W, 3) array, or floats in [-1, 1]."""
        batch = as_uint8_images(images).to(self.device)
        if batch.shape[0] == 0:
            return
        features = self.feature_extractor(batch)
        if features.dim() != 2 or features.shape[0] != batch.shape[0]:
            raise ValueError(
                f"the feature extractor must return (B, D) features, got {tuple(features.shape)} for B={batch.shape[0]}"
            )
        if self.num_features is None:
            self.num_features = features.shape[1]
        elif features.shape[1] != self.num_features:
            raise ValueError(f"the feature extractor returned D={features.shape[1]}, expected {self.num_features}")
        self._features[bool(real)].append(features.float())

    def reset(self, *, keep_real: bool = False) -> None:
        """Forget the generated set, and the real set unless keep_real (same anime set, next model)."""
        self._features[False] = []
        if not keep_real:
            self._features[True] = []

    @property
    def num_real(self) -> int:
        return sum(f.shape[0] for f in self._features[True])

    @property
    def num_fake(self) -> int:
        return sum(f.shape[0] for f in self._features[False])

    # -- the metrics

    def compute(self) -> dict[str, float | int]:
        """FID and KID of the images so far; ValueError if a set has fewer than 2 images."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        num_real, num_fake = self.num_real, self.num_fake
        for name, n in (("real (reference)", num_real), ("generated", num_fake)):
            if n < 2:
                raise ValueError(f"FID needs at least 2 {name} images (it estimates a covariance), got {n}")
        real = torch.cat(self._features[True])  # (N_real, D)
        fake = torch.cat(self._features[False])  # (N_fake, D)

        # FID: Gaussian fits of both feature sets, d^2 = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2)
        # sync_on_compute=False: the sets are this process's; inside a torch.distributed group
        # torchmetrics would otherwise all-gather (and wait for) other ranks' states.
        fid_metric = FrechetInceptionDistance(feature=_Precomputed(self.num_features), sync_on_compute=False)
        fid_metric = fid_metric.to(self.device)
        fid_metric.update(real, real=True)
        fid_metric.update(fake, real=False)
        fid = float(fid_metric.compute())

        # KID: unbiased polynomial-kernel MMD^2 over random subsets, subset size capped by the sets
        subset_size = min(self.kid_max_subset_size, num_real, num_fake)
        with warnings.catch_warnings():  # "KID will save all extracted features": we know
            warnings.simplefilter("ignore", UserWarning)
            kid_metric = KernelInceptionDistance(
                feature=_Precomputed(self.num_features),
                subsets=self.kid_subsets,
                subset_size=subset_size,
                sync_on_compute=False,
            ).to(self.device)
        kid_metric.update(real, real=True)
        kid_metric.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets with the global CPU RNG
            torch.manual_seed(self.kid_seed)
            kid_mean, kid_std = kid_metric.compute()

        return {
            "fid": fid,
            "kid_mean": float(kid_mean),
            "kid_std": float(kid_std),
            "kid_subset_size": subset_size,
            "num_real": num_real,
            "num_fake": num_fake,
        }


# ----------------------------------------------------------------------------------------
# Folders of images


class ImageBatches:
    """Iterable of uint8 (B, 3, H, W) batches of `paths`, in order; see `image_batches`.

    After (or during) an iteration, `skipped` lists (path, reason) for unreadable files and
    `num_images` counts the images yielded. Iterating again starts both afresh.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], size: int | None, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive number of pixels or None (native size), got {size}")
        self.paths = [os.fspath(p) for p in paths]
        self.size = size
        self.batch_size = batch_size
        self.skipped: list[tuple[str, str]] = []
        self.num_images = 0

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _load(self, path: str) -> np.ndarray | None:
        """(H, W, 3) uint8, or None (recorded in skipped) if the file cannot be read."""
        try:
            img = load_image(path)
        except (ImageDecodeError, OSError) as e:
            self.skipped.append((path, str(e)))
            return None
        if self.size is not None:
            return resize_square(img, self.size)  # PIL bicubic
        return np.asarray(img, dtype=np.uint8)

    def __iter__(self) -> Iterator[Tensor]:
        self.skipped, self.num_images = [], 0
        pending: list[np.ndarray] = []
        for path in self.paths:
            array = self._load(path)
            if array is None:
                continue
            # Native sizes may differ: a batch holds one size (Inception resizes each to 299 anyway).
            if pending and (len(pending) == self.batch_size or array.shape != pending[0].shape):
                yield self._stack(pending)
                pending = []
            pending.append(array)
        if pending:
            yield self._stack(pending)

    def _stack(self, arrays: list[np.ndarray]) -> Tensor:
        self.num_images += len(arrays)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


def image_batches(paths: Sequence[str | os.PathLike], *, size: int | None, batch_size: int) -> ImageBatches:
    """uint8 (B, 3, H, W) batches of the images at `paths`, decoded by `load_image`.

    size: resize each image to size x size (PIL bicubic, aspect ratio not kept; the protocol
    resizes the anime reference to 256), or None for native sizes (a batch then breaks
    where the size changes). Unreadable files are skipped and listed in `.skipped`.
    """
    return ImageBatches(paths, size, batch_size)


def fid_between_files(
    real: Sequence[str | os.PathLike],
    generated: Sequence[str | os.PathLike],
    *,
    metrics: DistributionMetrics,
    size: int | None,
    batch_size: int,
    names: tuple[str, str] = ("the real images", "the generated images"),
) -> dict:
    """FID/KID between two lists of image files, both resized to `size` unless None.

    `metrics` is reset first. Returns `metrics.compute()` plus `skipped_real`/`skipped_fake`
    (counts of unreadable files) and `size`. Raises ValueError naming the set (`names`: how
    errors call the real and the generated set) when it has fewer than 2 readable images.
    """
    metrics.reset()
    skipped = {}
    for real_set, paths, name in ((True, real, names[0]), (False, generated, names[1])):
        batches = image_batches(paths, size=size, batch_size=batch_size)
        for batch in batches:
            metrics.update(batch, real=real_set)
        if batches.num_images < 2:
            raise ValueError(
                f"{name} has {batches.num_images} readable image(s) ({batches.num_skipped} unreadable); "
                "FID needs at least 2"
            )
        skipped[real_set] = batches.num_skipped
    result = dict(metrics.compute())
    result.update(skipped_real=skipped[True], skipped_fake=skipped[False], size=size)
    return result


# ----------------------------------------------------------------------------------------
# Photos <-> translations


def _stem(path: str | os.PathLike) -> str:
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def check_matched_counts(
    photos: Sequence[str | os.PathLike], translations: Sequence[str | os.PathLike], show: int = 5
) -> None:
    """Raise ValueError unless every photo has exactly one translation, matched by file stem.

    The message gives both counts and up to `show` names missing on each side.
    """
    photo_stems, translated_stems = Counter(map(_stem, photos)), Counter(map(_stem, translations))
    if photo_stems == translated_stems:
        return
    missing = sorted((photo_stems - translated_stems).elements())
    extra = sorted((translated_stems - photo_stems).elements())

    def names(items: list[str]) -> str:
        more = f", ... ({len(items) - show} more)" if len(items) > show else ""
        return ", ".join(items[:show]) + more

    parts = [f"{len(photos)} photos but {len(translations)} translations do not match by file stem"]
    if missing:
        parts.append(f"{len(missing)} photos without a translation: {names(missing)}")
    if extra:
        parts.append(f"{len(extra)} translations without a photo: {names(extra)}")
    raise ValueError("; ".join(parts) + ". Fix: translate the missing photos, or evaluate on matching folders")
