"""FID / KID (scenimefy.evaluation.metrics) with a tiny random feature extractor; no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_priors import TinyFeatures
from torch import nn

from scenimefy.config import PriorsConfig
from scenimefy.data.decode import list_image_files
from scenimefy.evaluation.metrics import (
    DistributionMetrics,
    as_uint8_images,
    check_matched_counts,
    fid_between_files,
    image_batches,
)

# ----------------------------------------------------------------------------------------
# Helpers


class Recorder(nn.Module):
    """Returns the per-channel mean and keeps every input batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return x.float().mean(dim=(2, 3))  # (B, 3)


def tiny_metrics(**kwargs) -> DistributionMetrics:
    return DistributionMetrics(feature_extractor=TinyFeatures(), num_features=8, **kwargs)


def random_images(n: int = 32, size: int = 16, high: int = 150, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) in [0, high): room for a +80 brightness shift."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 3, size, size), generator=g, dtype=torch.uint8)


def brighten(images: torch.Tensor, amount: int) -> torch.Tensor:
    return (images.int() + amount).clamp(0, 255).to(torch.uint8)


def metrics_between(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> dict:
    metrics = tiny_metrics(**kwargs)
    for chunk in real.split(10):  # several batches, uneven last one
        metrics.update(chunk, real=True)
    for chunk in fake.split(7):
        metrics.update(chunk, real=False)
    return metrics.compute()


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def fid_between_folders(real_dir, fake_dir, *, metrics: DistributionMetrics, size, batch_size: int) -> dict:
    """FID/KID between two image folders (recursive): `fid_between_files` over their listings."""
    listed = {}
    for role, folder in (("real", real_dir), ("generated", fake_dir)):
        files = list_image_files(folder)
        if not files:
            raise ValueError(f"no images in the {role} folder {os.fspath(folder)!r} (searched recursively)")
        listed[role] = files
    names = (f"the real folder {os.fspath(real_dir)!r}", f"the generated folder {os.fspath(fake_dir)!r}")
    return fid_between_files(
        listed["real"], listed["generated"], metrics=metrics, size=size, batch_size=batch_size, names=names
    )


def write_images(folder: Path, n: int, size: int = 12, seed: int = 0, prefix: str = "img") -> list[Path]:
    rng = np.random.default_rng(seed)
    return [
        write_png(folder / f"{prefix}{i:02d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        for i in range(n)
    ]


# ----------------------------------------------------------------------------------------
# FID and KID


def test_fid_is_zero_for_a_set_with_itself_and_grows_with_brightness_shift():
    images = random_images()
    fids = [metrics_between(images, brighten(images, shift))["fid"] for shift in (0, 40, 80)]
    assert abs(fids[0]) < 1e-3 * fids[1]  # ~0 on the scale of the tiny extractor's FIDs
    assert fids[0] < fids[1] < fids[2]


def test_kid_is_near_zero_for_identical_sets_and_grows_with_brightness_shift():
    images = random_images()
    results = [metrics_between(images, brighten(images, shift)) for shift in (0, 40, 80)]
    kids = [r["kid_mean"] for r in results]
    assert abs(kids[0]) < 0.05 * kids[1]
    assert kids[0] < kids[1] < kids[2]
    assert all(r["kid_std"] >= 0 for r in results)


def test_compute_reports_counts_and_kid_subset_size_follows_small_sets():
    result = metrics_between(random_images(12), random_images(9, seed=1))
    assert (result["num_real"], result["num_fake"]) == (12, 9)
    assert result["kid_subset_size"] == 9  # min(1000, 12, 9): torchmetrics would reject 1000
    capped = metrics_between(random_images(12), random_images(9, seed=1), kid_max_subset_size=4)
    assert capped["kid_subset_size"] == 4


def test_kid_is_repeatable_with_its_seed():
    real, fake = random_images(20), brighten(random_images(20, seed=1), 20)
    first = metrics_between(real, fake, kid_max_subset_size=8)
    torch.rand(100)  # moves the global RNG: must not matter
    assert metrics_between(real, fake, kid_max_subset_size=8) == first
    assert metrics_between(real, fake, kid_max_subset_size=8, kid_seed=1)["kid_mean"] != first["kid_mean"]


def test_compute_with_fewer_than_two_images_raises():
    metrics = tiny_metrics()
    metrics.update(random_images(4), real=True)
    metrics.update(random_images(1), real=False)
    with pytest.raises(ValueError, match="at least 2 generated images.*got 1"):
        metrics.compute()
    with pytest.raises(ValueError, match="at least 2 real"):
        tiny_metrics().compute()


def test_reset_can_keep_the_real_set():
    real, fake = random_images(10), random_images(10, seed=1)
    metrics = tiny_metrics()
    metrics.update(real, real=True)
    metrics.update(fake, real=False)
    before = metrics.compute()
    metrics.reset(keep_real=True)
    assert (metrics.num_real, metrics.num_fake) == (10, 0)
    metrics.update(fake, real=False)
    assert metrics.compute() == before
    metrics.reset()
    assert (metrics.num_real, metrics.num_fake) == (0, 0)


def test_exactly_one_of_priors_or_feature_extractor():
    with pytest.raises(ValueError, match="exactly one"):
        DistributionMetrics()
    with pytest.raises(ValueError, match="exactly one"):
        DistributionMetrics(PriorsConfig(offline=True), feature_extractor=TinyFeatures())


def test_wrong_feature_dimension_is_reported():
    metrics = DistributionMetrics(feature_extractor=TinyFeatures(dim=8), num_features=16)
    with pytest.raises(ValueError, match="D=8, expected 16"):
        metrics.update(random_images(2), real=True)


# ----------------------------------------------------------------------------------------
# Input conversion


def test_float_images_in_minus_one_one_are_rounded_not_truncated():
    expected = torch.arange(256, dtype=torch.uint8).repeat(3).view(1, 3, 16, 16)  # every level
    # 0.3 of a level below each value: rounding gives it back, truncation gives one less.
    floats = (expected.double() - 0.3) / 127.5 - 1.0
    floats[expected == 0] = -1.0
    assert torch.equal(as_uint8_images(floats.float()), expected)
    assert torch.equal(as_uint8_images(floats.half().clamp(-1, 1)), as_uint8_images(floats.half().float()))


def test_float_batches_reach_the_extractor_as_rounded_uint8():
    recorder = Recorder()
    metrics = DistributionMetrics(feature_extractor=recorder, num_features=3)
    images = random_images(2, size=4)
    metrics.update((images.double() + 0.45) / 127.5 - 1.0, real=True)
    assert recorder.inputs[0].dtype == torch.uint8
    assert torch.equal(recorder.inputs[0], images)


def test_numpy_hwc_images_are_accepted_and_match_nchw_tensors():
    images = random_images(3, size=5)
    assert torch.equal(as_uint8_images(images.permute(0, 2, 3, 1).numpy()), images)
    assert torch.equal(as_uint8_images(images.long()), images)  # integer 0..255 of another dtype

    recorder = Recorder()
    metrics = DistributionMetrics(feature_extractor=recorder)
    metrics.update(images.permute(0, 2, 3, 1).numpy(), real=True)
    metrics.update(images, real=False)
    assert metrics.num_features == 3  # read from the first batch
    assert torch.equal(recorder.inputs[0], recorder.inputs[1])


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 3, 4, 4), 200.0), r"float images must be in \[-1, 1\]"),
        (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
        (torch.full((1, 3, 4, 4), 300, dtype=torch.int32), r"0\.\.255"),
        (torch.zeros(1, 4, 4, 3, dtype=torch.uint8), r"\(B, 3, H, W\)"),
        (np.zeros((1, 3, 4, 4), dtype=np.uint8), r"\(B, H, W, 3\)"),
    ],
)
def test_bad_image_batches_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        as_uint8_images(bad)


# ----------------------------------------------------------------------------------------
# Folders


def test_image_batches_resize_batch_and_skip_a_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (10 + i, 20, 3), dtype=np.uint8) for i in range(5)]
    paths = [write_png(tmp_path / f"{i}.png", a) for i, a in enumerate(arrays)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    batches = image_batches([*paths[:2], corrupt, *paths[2:]], size=8, batch_size=2)

    out = list(batches)
    assert [tuple(b.shape) for b in out] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    assert all(b.dtype == torch.uint8 for b in out)
    assert batches.num_images == 5
    assert batches.num_skipped == 1 and batches.skipped[0][0] == str(corrupt)
    # PIL bicubic, as decode.resize_square does
    first = np.asarray(Image.open(paths[0]).convert("RGB").resize((8, 8), Image.Resampling.BICUBIC))
    assert torch.equal(out[0][0], torch.from_numpy(first.copy()).permute(2, 0, 1))
    assert len(list(batches)) == 3  # a second pass counts afresh, not twice
    assert (batches.num_images, batches.num_skipped) == (5, 1)


def test_image_batches_at_native_size_break_where_the_size_changes(tmp_path):
    rng = np.random.default_rng(0)
    shapes = [(6, 6), (6, 6), (6, 6), (4, 5), (4, 5)]
    arrays = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]
    paths = [write_png(tmp_path / f"{i}.png", a) for i, a in enumerate(arrays)]
    out = list(image_batches(paths, size=None, batch_size=2))
    assert [tuple(b.shape) for b in out] == [(2, 3, 6, 6), (1, 3, 6, 6), (2, 3, 4, 5)]
    assert torch.equal(out[2][1], torch.from_numpy(np.array(Image.open(paths[4]))).permute(2, 0, 1))


def test_fid_between_folders_equals_the_in_memory_metrics(tmp_path):
    write_images(tmp_path / "anime" / "sub", 6, seed=0)
    write_images(tmp_path / "translated", 5, seed=1)
    (tmp_path / "translated" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")

    result = fid_between_folders(
        tmp_path / "anime", tmp_path / "translated", metrics=tiny_metrics(), size=None, batch_size=4
    )

    direct = tiny_metrics()
    for path in sorted((tmp_path / "anime" / "sub").glob("*.png")):
        direct.update(np.asarray(Image.open(path))[None], real=True)
    for path in sorted((tmp_path / "translated").glob("*.png")):
        direct.update(np.asarray(Image.open(path))[None], real=False)
    expected = direct.compute()
    assert result["fid"] == pytest.approx(expected["fid"], rel=1e-5)
    assert result["kid_mean"] == pytest.approx(expected["kid_mean"], rel=1e-5, abs=1e-9)
    assert (result["num_real"], result["num_fake"]) == (6, 5)
    assert (result["skipped_real"], result["skipped_fake"], result["size"]) == (0, 1, None)


def test_fid_between_folders_resets_the_metrics(tmp_path):
    write_images(tmp_path / "a", 3, seed=0)
    write_images(tmp_path / "b", 3, seed=1)
    metrics = tiny_metrics()
    first = fid_between_folders(tmp_path / "a", tmp_path / "b", metrics=metrics, size=8, batch_size=2)
    assert fid_between_folders(tmp_path / "a", tmp_path / "b", metrics=metrics, size=8, batch_size=2) == first


def test_empty_folder_raises_naming_it(tmp_path):
    write_images(tmp_path / "anime", 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no images in the generated folder .*empty"):
        fid_between_folders(tmp_path / "anime", tmp_path / "empty", metrics=tiny_metrics(), size=None, batch_size=2)
    with pytest.raises(ValueError, match=r"no images in the real folder .*empty"):
        fid_between_folders(tmp_path / "empty", tmp_path / "anime", metrics=tiny_metrics(), size=None, batch_size=2)


def test_single_image_folder_raises(tmp_path):
    write_images(tmp_path / "anime", 3)
    write_images(tmp_path / "one", 1)
    (tmp_path / "one" / "bad.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"folder .*one.* has 1 readable image\(s\) \(1 unreadable\).*at least 2"):
        fid_between_folders(tmp_path / "anime", tmp_path / "one", metrics=tiny_metrics(), size=None, batch_size=2)


# ----------------------------------------------------------------------------------------
# Photos <-> translations


def test_check_matched_counts_matches_by_stem():
    check_matched_counts(["p/a.jpg", "p/sub/b.jpeg"], ["t/b.png", "t/a.png"])  # no error


def test_check_matched_counts_lists_unmatched_names():
    photos = [f"photos/img{i}.jpg" for i in range(10)]
    translations = [f"out/img{i}.png" for i in range(2, 10)] + ["out/stray.png"]
    with pytest.raises(ValueError, match=r"10 photos but 9 translations") as info:
        check_matched_counts(photos, translations)
    message = str(info.value)
    assert "2 photos without a translation: img0, img1" in message
    assert "1 translations without a photo: stray" in message


def test_check_matched_counts_truncates_long_lists_and_counts_duplicates():
    with pytest.raises(ValueError, match=r"20 photos without a translation: img00, .*img04, \.\.\. \(15 more\)"):
        check_matched_counts([f"img{i:02d}.jpg" for i in range(20)], [])
    with pytest.raises(ValueError, match="1 translations without a photo: a"):
        check_matched_counts(["a.jpg"], ["a.png", "x/a.png"])  # same count is not enough


# ----------------------------------------------------------------------------------------
# The real FID Inception, from a local file, offline


@pytest.fixture(scope="module")
def inception_cfg(tmp_path_factory) -> PriorsConfig:
    pytest.importorskip("torch_fidelity")
    from tiny_priors import write_random_fid_inception

    root = tmp_path_factory.mktemp("fid")
    weights = write_random_fid_inception(root / "inception.pth")  # random, the real layout
    return PriorsConfig(cache_dir=str(root / "cache"), offline=True, inception_weights=str(weights))


def test_real_inception_path_runs_offline_and_matches_make_fid_metric(inception_cfg):
    from scenimefy.priors.loading import make_fid_metric

    real, fake = random_images(3, size=32), brighten(random_images(3, size=32, seed=1), 60)
    metrics = DistributionMetrics(inception_cfg, feature=64)
    metrics.update(real, real=True)
    metrics.update(fake.permute(0, 2, 3, 1).numpy(), real=False)
    result = metrics.compute()
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    assert result["kid_subset_size"] == 3 and np.isfinite(result["kid_mean"])

    reference = make_fid_metric(inception_cfg, feature=64)  # torchmetrics FID on the images directly
    reference.update(real, real=True)
    reference.update(fake, real=False)
    assert result["fid"] == pytest.approx(float(reference.compute()), rel=1e-4)


def test_real_inception_offline_without_weights_names_the_file(tmp_path):
    from scenimefy.priors.loading import FID_INCEPTION_FILE, PriorNotAvailable

    with pytest.raises(PriorNotAvailable, match=FID_INCEPTION_FILE):
        DistributionMetrics(PriorsConfig(cache_dir=str(tmp_path), offline=True))
