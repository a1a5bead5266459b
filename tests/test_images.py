"""Tensor <-> uint8 conversion, atomic writes, grids."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from scenimefy.data.images import OWNED_MARKER, atomic_path, from_uint8, image_grid, save_image_atomic, to_uint8

# ----------------------------------------------------------------------------------------
# to_uint8 / from_uint8


def test_to_uint8_rounds_to_nearest_not_truncates():
    # (v + 1) * 127.5: 0 -> 127.5 -> 128; 0.003 -> 127.88 -> 128 (truncation: 127);
    # -0.003 -> 127.12 -> 127; 0.996 -> 254.49 -> 254; 0.9965 -> 254.55 -> 255.
    t = torch.tensor([0.0, 0.003, -0.003, 0.996, 0.9965, -0.9961]).view(3, 1, 2)
    got = to_uint8(t)  # (1, 2, 3): channels last
    assert got.shape == (1, 2, 3) and got.dtype == np.uint8
    assert got.transpose(2, 0, 1).ravel().tolist() == [128, 128, 127, 254, 255, 0]


def test_to_uint8_clamps_out_of_range():
    t = torch.tensor([-5.0, -1.0, 1.0, 7.0, float("inf"), -float("inf")]).view(1, 3, 1, 2)
    got = to_uint8(t)
    assert got.shape == (1, 1, 2, 3)
    assert got.transpose(0, 3, 1, 2).ravel().tolist() == [0, 0, 255, 255, 255, 0]


def test_to_uint8_batched_layout_is_channels_last():
    t = torch.zeros(2, 3, 4, 5)
    t[1, 0] = 1.0  # red in the second image
    got = to_uint8(t)
    assert got.shape == (2, 4, 5, 3)
    assert (got[1, ..., 0] == 255).all() and (got[0, ..., 0] == 128).all()


def test_to_uint8_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        to_uint8(torch.zeros(1, 4, 2, 2))


def test_from_uint8_is_inverse_of_to_uint8_on_all_levels():
    a = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    t = from_uint8(a)
    assert t.shape == (1, 3, 16, 16) and t.dtype == torch.float32
    assert t.min().item() == -1.0 and t.max().item() == 1.0
    np.testing.assert_array_equal(to_uint8(t)[0], a)


def test_from_uint8_accepts_tensor_batches_and_rejects_floats():
    a = torch.full((2, 3, 4, 3), 255, dtype=torch.uint8)
    t = from_uint8(a)
    assert t.shape == (2, 3, 3, 4) and torch.all(t == 1.0)
    with pytest.raises(ValueError, match="uint8"):
        from_uint8(np.zeros((4, 4, 3), np.float32))


# ----------------------------------------------------------------------------------------
# atomic_path / save_image_atomic


def test_atomic_path_renames_on_success_with_hidden_same_suffix_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    with atomic_path(target) as tmp:
        name = os.path.basename(tmp)
        assert name.startswith(".") and name.endswith(".json")
        assert os.path.dirname(tmp) == str(target.parent)
        with open(tmp, "w") as f:
            f.write("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["state.json"]


def test_atomic_path_on_exception_removes_temp_and_keeps_original(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_atomic_path_works_with_torch_save(tmp_path):
    target = tmp_path / "w.pt"
    with atomic_path(target) as tmp:
        torch.save({"a": torch.ones(2)}, tmp)
    assert torch.load(target, weights_only=True)["a"].sum().item() == 2.0


def test_atomic_path_replaces_a_folder_as_a_whole(tmp_path):
    target = tmp_path / "selected"
    (target / "trainA").mkdir(parents=True)
    (target / "trainA" / "old.png").write_text("old")
    (target / OWNED_MARKER).write_text("")  # a folder scenimefy wrote: replaceable
    with atomic_path(target) as tmp:
        os.makedirs(os.path.join(tmp, "trainA"))
        with open(os.path.join(tmp, "trainA", "new.png"), "w") as f:
            f.write("new")
        assert (target / "trainA" / "old.png").exists()  # the previous folder stays until the end
    assert os.listdir(target / "trainA") == ["new.png"]
    assert os.listdir(tmp_path) == ["selected"]  # no temporary or moved-aside folder left


def test_atomic_path_on_exception_removes_a_temp_folder_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "selected"
    target.mkdir()
    (target / "keep.png").write_text("old")
    (target / OWNED_MARKER).write_text("")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            os.makedirs(os.path.join(tmp, "trainA"))
            raise RuntimeError("boom")
    assert sorted(os.listdir(target)) == sorted([OWNED_MARKER, "keep.png"])
    assert os.listdir(tmp_path) == ["selected"]


def test_save_image_atomic_roundtrip_png_and_default_format(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = save_image_atomic(tmp_path / "deep" / "x.png", a)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), a)
    q = save_image_atomic(tmp_path / "noext", a)
    assert Image.open(q).format == "PNG"
    r = save_image_atomic(tmp_path / "y.jpg", a)
    assert Image.open(r).format == "JPEG"
    assert sorted(os.listdir(tmp_path)) == ["deep", "noext", "y.jpg"]


def test_save_image_atomic_rejects_float_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        save_image_atomic(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------
# image_grid


def _img(h, w, v):
    return np.full((h, w, 3), v, np.uint8)


def test_image_grid_size_arithmetic_without_labels():
    rows = [[_img(8, 10, 0), _img(8, 6, 50)], [_img(4, 10, 100), _img(8, 6, 150)]]
    g = image_grid(rows, pad=2)
    # widths: cols 10 + 6, 3 pads; heights: rows 8 + 8, 3 pads
    assert g.shape == (8 + 8 + 3 * 2, 10 + 6 + 3 * 2, 3) and g.dtype == np.uint8
    assert (g[2:10, 2:12] == 0).all()  # first image at (pad, pad)
    assert (g[12:20, 14:20] == 150).all()  # last image
    assert (g[0, :] == 255).all()  # frame is background


def test_image_grid_centres_smaller_images_and_leaves_none_empty():
    g = image_grid([[_img(6, 6, 0)], [_img(2, 2, 0), None]], pad=0, background=200)
    assert g.shape == (6 + 2, 6 + 0, 3)  # second column has no image: zero width
    assert (g[6:8, 2:4] == 0).all() and (g[6:8, :2] == 200).all()


def test_image_grid_labels_add_margins_and_ink():
    rows = [[_img(16, 16, 255)] * 3, [_img(16, 16, 255)] * 3]
    plain = image_grid(rows, pad=2)
    labelled = image_grid(rows, pad=2, row_labels=["x", "G(x)"], col_labels=["a", "b", "c"])
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    assert (labelled < 128).any()  # some text was drawn on the white canvas
    with pytest.raises(ValueError, match="column labels"):
        image_grid(rows, col_labels=["a"])


def test_image_grid_accepts_grey_images():
    g = image_grid([[np.zeros((3, 3), np.uint8)]], pad=1)
    assert g.shape == (5, 5, 3)
