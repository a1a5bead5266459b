"""Procedural demo data: determinism, shapes, a measurable domain gap, the dataset layout."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from scenimefy.data.decode import list_image_files, load_image
from scenimefy.demo.scenes import (
    NUM_LABELS,
    SKY,
    SceneParams,
    render_anime,
    render_photo,
    sample_scene,
    scene_labels,
    write_demo_dataset,
)

SIZE = 64


def _scenes(n: int, base: int = 100) -> list[SceneParams]:
    return [sample_scene(np.random.default_rng(base + k)) for k in range(n)]


@pytest.fixture(scope="module")
def rendered():
    """(photo, anime) renderings of the same 16 scenes at 64 px."""
    return [(render_photo(p, SIZE), render_anime(p, SIZE)) for p in _scenes(16)]


# ----------------------------------------------------------------------------------------
# Image statistics


def _saturation(a: np.ndarray) -> float:
    f = a.astype(np.float32) / 255.0
    mx, mn = f.max(axis=2), f.min(axis=2)
    return float(((mx - mn) / np.maximum(mx, 1e-6)).mean())


def _n_colours(a: np.ndarray) -> int:
    return len(np.unique(a.reshape(-1, 3), axis=0))


def _flat_fraction(a: np.ndarray) -> float:
    """Fraction of pixels exactly equal to their four neighbours (0 under sensor noise)."""
    a = a.astype(np.int16)
    c = a[1:-1, 1:-1]
    same = (
        (c == a[:-2, 1:-1]).all(2) & (c == a[2:, 1:-1]).all(2) & (c == a[1:-1, :-2]).all(2) & (c == a[1:-1, 2:]).all(2)
    )
    return float(same.mean())


def _laplacian_median(a: np.ndarray) -> float:
    g = a.astype(np.float32).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.median(np.abs(lap)))


def _cells(partition: np.ndarray) -> np.ndarray:
    """Cell index of each pixel: one cell per distinct colour (an anime image is flat, so
    its colours are its regions and tones)."""
    return np.unique(partition.reshape(-1, 3), axis=0, return_inverse=True)[1].ravel()


def _explained_by_cells(img: np.ndarray, cell: np.ndarray) -> float:
    """R^2 of img's colours when each pixel is replaced by the mean of its cell."""
    g = img.astype(np.float64).reshape(-1, 3)
    count = np.bincount(cell)
    means = np.stack([np.bincount(cell, g[:, c]) / np.maximum(count, 1) for c in range(3)], axis=1)
    return 1.0 - ((g - means[cell]) ** 2).sum() / ((g - g.mean(0)) ** 2).sum()


# ----------------------------------------------------------------------------------------
# Grammar and renderers


def test_sample_scene_is_deterministic_by_seed():
    a = sample_scene(np.random.default_rng(7))
    b = sample_scene(np.random.default_rng(7))
    c = sample_scene(np.random.default_rng(8))
    assert a == b and a != c
    assert 0.0 < a.horizon < 1.0 and len(a.ridges) <= 3 and a.foreground in ("water", "grass")


def test_scene_grammar_covers_its_variations():
    scenes = _scenes(60)
    assert {len(s.ridges) for s in scenes} == {0, 1, 2, 3}
    assert {s.foreground for s in scenes} == {"water", "grass"}
    assert {s.time_of_day for s in scenes} >= {"day", "golden", "dusk"}
    assert any(s.trees for s in scenes) and any(s.clouds for s in scenes)


@pytest.mark.parametrize("render", [render_photo, render_anime])
@pytest.mark.parametrize("size", [32, 64, 100])
def test_renderers_are_deterministic_uint8_squares(render, size):
    p = sample_scene(np.random.default_rng(3))
    a, b = render(p, size), render(p, size)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_scene_labels_put_sky_on_top_and_ground_at_the_bottom():
    for p in _scenes(8):
        lab = scene_labels(p, SIZE)
        assert lab.shape == (SIZE, SIZE) and lab.min() >= 0 and lab.max() < NUM_LABELS
        assert (lab[0] != SKY).mean() < 0.9  # top row is mostly sky, sun or cloud
        assert not np.isin(lab[-1], [SKY]).any()  # no sky in the bottom row


def test_anime_is_more_saturated_than_the_photo_of_the_same_scene(rendered):
    sat = np.array([[_saturation(ph), _saturation(an)] for ph, an in rendered])
    assert (sat[:, 1] > sat[:, 0]).all()
    assert sat[:, 1].mean() > 1.5 * sat[:, 0].mean()


def test_anime_has_far_fewer_distinct_colours(rendered):
    for ph, an in rendered:
        assert _n_colours(an) * 10 < _n_colours(ph)


def test_anime_is_flat_and_photo_is_noisy(rendered):
    flat = np.array([[_flat_fraction(ph), _flat_fraction(an)] for ph, an in rendered])
    assert flat[:, 0].max() < 0.05  # sensor noise: almost no pixel equals all its neighbours
    assert flat[:, 1].min() > 0.3  # cel shading: large flat regions
    lap = np.array([[_laplacian_median(ph), _laplacian_median(an)] for ph, an in rendered])
    assert lap[:, 1].mean() < 0.3 * lap[:, 0].mean()


def test_pairs_share_layout(rendered):
    # The anime image's flat regions explain its own photo better than any other photo.
    n = len(rendered)
    cells = [_cells(an) for _, an in rendered]
    r2 = np.array([[_explained_by_cells(rendered[i][0], cells[j]) for j in range(n)] for i in range(n)])
    diag = np.diag(r2)
    off = r2[~np.eye(n, dtype=bool)]
    assert (r2.argmax(axis=1) == np.arange(n)).mean() >= 0.9
    assert diag.mean() > off.mean() + 0.1
    assert np.median(diag) > 0.85


def test_renderers_are_fast_enough_for_the_demo():
    # Vectorised numpy: a per-pixel Python loop would take far longer than this bound.
    scenes = _scenes(3, base=500)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for p in scenes:
            render_photo(p, 128)
            render_anime(p, 128)
        best = min(best, (time.perf_counter() - t0) / (2 * len(scenes)))
    assert best < 0.25


# ----------------------------------------------------------------------------------------
# Dataset on disk

COUNTS = dict(n_photos=3, n_anime=4, n_pairs=5, n_test=2, size=32, seed=11)


def test_write_demo_dataset_layout_counts_and_pair_names(tmp_path):
    paths = write_demo_dataset(str(tmp_path / "demo"), **COUNTS)
    assert set(paths) == {"root", "photos", "anime", "pairs", "pairs_a", "pairs_b", "test"}
    names = lambda k: [os.path.basename(f) for f in list_image_files(paths[k])]  # noqa: E731
    assert names("photos") == ["000000.png", "000001.png", "000002.png"]
    assert len(names("anime")) == 4 and len(names("test")) == 2
    assert names("pairs_a") == names("pairs_b") == [f"{i:06d}.png" for i in range(5)]
    assert paths["pairs_a"] == os.path.join(paths["pairs"], "trainA")
    assert paths["pairs_b"] == os.path.join(paths["pairs"], "trainB")
    img = np.asarray(load_image(os.path.join(paths["pairs_b"], "000004.png")))
    assert img.shape == (32, 32, 3)
    # Only the images and the marker: no temporary files left behind.
    leftovers = [f for _, _, fs in os.walk(paths["root"]) for f in fs if f.startswith(".") and "tmp" in f]
    assert leftovers == []


def test_write_demo_dataset_is_deterministic_and_groups_are_independent(tmp_path):
    a = write_demo_dataset(str(tmp_path / "a"), **COUNTS)
    b = write_demo_dataset(str(tmp_path / "b"), **COUNTS)
    read = lambda d, n: open(os.path.join(d, n), "rb").read()  # noqa: E731
    for key in ("photos", "anime", "pairs_a", "pairs_b", "test"):
        for f in os.listdir(a[key]):
            assert read(a[key], f) == read(b[key], f)
    # Different scenes in each group: photos, pairs and test photos do not repeat each other.
    assert read(a["photos"], "000000.png") != read(a["pairs_a"], "000000.png")
    assert read(a["photos"], "000000.png") != read(a["test"], "000000.png")
    c = write_demo_dataset(str(tmp_path / "c"), **{**COUNTS, "seed": 12})
    assert read(a["photos"], "000000.png") != read(c["photos"], "000000.png")


def test_write_demo_dataset_skips_a_complete_set_and_redoes_a_changed_one(tmp_path):
    root = str(tmp_path / "demo")
    paths = write_demo_dataset(root, **COUNTS)
    probe = os.path.join(paths["photos"], "000000.png")
    os.utime(probe, (0, 0))
    write_demo_dataset(root, **COUNTS)
    assert os.path.getmtime(probe) == 0  # complete: nothing rewritten

    os.remove(os.path.join(paths["anime"], "000001.png"))  # incomplete: regenerated
    write_demo_dataset(root, **COUNTS)
    assert os.path.exists(os.path.join(paths["anime"], "000001.png"))

    write_demo_dataset(root, **{**COUNTS, "n_pairs": 2})  # fewer pairs: extras removed
    assert sorted(os.listdir(paths["pairs_a"])) == ["000000.png", "000001.png"]
    assert sorted(os.listdir(paths["pairs_b"])) == ["000000.png", "000001.png"]


def test_write_demo_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_pairs must be >= 0"):
        write_demo_dataset(str(tmp_path), **{**COUNTS, "n_pairs": -1})
    with pytest.raises(ValueError, match="size must be >= 16"):
        write_demo_dataset(str(tmp_path), **{**COUNTS, "size": 8})
