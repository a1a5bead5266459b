"""Tolerant decoding: odd modes, EXIF orientation, broken files, listing, resizing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_photos import PHOTOS as SHARED_PHOTOS

from scenimefy.data.decode import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    decode_image,
    list_image_files,
    load_image,
    resize_square,
)


def _decoded(tmp_path: Path, img: Image.Image, name: str, **save_kw) -> np.ndarray:
    path = tmp_path / name
    img.save(path, **save_kw)
    out = load_image(path)
    assert out.mode == "RGB"
    return np.asarray(out)


# ----------------------------------------------------------------------------------------
# Modes


def test_grey_l_becomes_rgb_with_equal_channels(tmp_path):
    a = _decoded(tmp_path, Image.new("L", (5, 4), 77), "l.png")
    assert a.shape == (4, 5, 3)
    assert (a == 77).all()


def test_la_transparent_pixel_becomes_white(tmp_path):
    img = Image.new("LA", (4, 4), (10, 255))
    img.putpixel((0, 0), (10, 0))
    a = _decoded(tmp_path, img, "la.png")
    assert tuple(a[0, 0]) == (255, 255, 255)
    assert tuple(a[2, 2]) == (10, 10, 10)


def test_palette_without_transparency_keeps_colours(tmp_path):
    img = Image.new("RGB", (4, 4), (200, 30, 40)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert img.mode == "P"
    a = _decoded(tmp_path, img, "p.png")
    assert np.abs(a.astype(int) - [200, 30, 40]).max() <= 2


def test_palette_with_transparency_composites_on_white(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 black, index 1 blue
    img.putpixel((0, 0), 0)
    path = tmp_path / "pt.png"
    img.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    a = np.asarray(load_image(path))
    assert tuple(a[0, 0]) == (255, 255, 255)  # transparent black -> white, not black
    assert tuple(a[1, 1]) == (0, 0, 255)


def test_rgba_transparent_pixel_becomes_white_and_half_alpha_blends(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((1, 1), (255, 0, 0, 255))
    img.putpixel((2, 2), (0, 0, 0, 128))
    a = _decoded(tmp_path, img, "rgba.png")
    assert tuple(a[0, 0]) == (255, 255, 255)
    assert tuple(a[1, 1]) == (255, 0, 0)
    assert np.abs(a[2, 2].astype(int) - 127).max() <= 1


def test_cmyk_pure_cyan_becomes_cyan(tmp_path):
    img = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    a = _decoded(tmp_path, img, "cmyk.jpg", quality=100)
    r, g, b = a[4, 4].astype(int)
    assert r < 40 and g > 215 and b > 215


def test_cmyk_tiff_black_key_becomes_black(tmp_path):
    img = Image.new("CMYK", (4, 4), (0, 0, 0, 255))
    a = _decoded(tmp_path, img, "k.tif")
    assert a.max() <= 10


def test_16bit_grey_png_scales_by_range_not_clipping(tmp_path):
    v = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    img = Image.fromarray(v)
    assert img.mode.startswith("I;16")
    a = _decoded(tmp_path, img, "g16.png")
    assert a[0, :, 0].tolist() == [0, 128, 255, 1]


def test_16bit_big_endian_mode_decodes_like_little_endian():
    v = np.array([[0, 65535, 32768]], dtype=">u2")
    img = Image.frombytes("I;16B", (3, 1), v.tobytes())
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    a = np.asarray(decode_image(buf.getvalue(), "be.tif"))
    assert a[0, :, 0].tolist() == [0, 255, 128]


def test_32bit_int_and_float_modes_decode(tmp_path):
    i32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), "I")
    assert np.asarray(decode_image(_encode(i32, "TIFF"), "i.tif"))[0, :, 0].tolist() == [0, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(decode_image(_encode(f, "TIFF"), "f.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_bilevel_and_ycbcr_modes_decode(tmp_path):
    one = Image.new("1", (4, 4), 1)
    assert (np.asarray(decode_image(_encode(one, "PNG"))) == 255).all()
    ycc = Image.new("RGB", (4, 4), (0, 128, 255)).convert("YCbCr")
    a = _decoded(tmp_path, ycc, "ycc.jpg", quality=100)
    assert np.abs(a[2, 2].astype(int) - [0, 128, 255]).max() <= 12


def test_pa_mode_is_composited_on_white():
    # No common file format stores PA, so exercise the conversion on the in-memory image.
    from scenimefy.data.decode import _to_rgb

    img = Image.new("PA", (2, 2))
    img.putpalette([0, 255, 0] * 256)
    img.putpixel((0, 0), (0, 0))
    img.putpixel((1, 1), (0, 255))
    a = np.asarray(_to_rgb(img))
    assert tuple(a[0, 0]) == (255, 255, 255)
    assert tuple(a[1, 1]) == (0, 255, 0)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _two_colour_image() -> Image.Image:
    a = np.zeros((48, 64, 3), np.uint8)
    a[:, :32] = (200, 30, 30)
    a[:, 32:] = (30, 30, 200)
    return Image.fromarray(a)


@pytest.mark.parametrize("suffix", [".heic", ".avif", ".jp2", ".ppm", ".tga", ".jfif"])
def test_phone_and_other_photo_formats_decode_and_are_listed(tmp_path, suffix):
    from PIL import features

    from scenimefy.data.decode import HEIF_SUPPORTED

    if suffix == ".heic" and not HEIF_SUPPORTED:
        pytest.skip("pillow-heif is not installed")
    if suffix == ".avif" and not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF")
    path = tmp_path / f"photo{suffix}"
    _two_colour_image().save(path, format="JPEG" if suffix == ".jfif" else None)
    a = np.asarray(load_image(path))
    assert a.shape == (48, 64, 3)
    np.testing.assert_allclose(a[24, 8], (200, 30, 30), atol=12)  # lossy codecs: close, not equal
    np.testing.assert_allclose(a[24, 56], (30, 30, 200), atol=12)
    assert list_image_files(tmp_path) == [str(path)]


def test_heic_without_pillow_heif_names_the_fix(monkeypatch):
    import scenimefy.data.decode as decode

    monkeypatch.setattr(decode, "HEIF_SUPPORTED", False)
    fake_heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64  # an ISO-BMFF header PIL alone cannot open
    with pytest.raises(ImageDecodeError, match="x.heic: HEIC/HEIF needs pillow-heif"):
        decode.decode_image(fake_heic, name="x.heic")


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    a = np.asarray(load_image(path))
    assert a.shape == (6, 6, 3)
    assert a[3, 3, 0] > 200 and a[3, 3, 2] < 50


def test_exif_orientation_6_is_applied(tmp_path):
    # 40 wide, 20 high, red block in the stored top-left corner; orientation 6 = rotate 90 CW.
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:6, :6] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)
    out = np.asarray(load_image(path))
    assert out.shape == (40, 20, 3)  # transposed
    assert out[2, -3, 0] > 200 and out[2, -3, 1] < 60  # corner moved to top-right
    assert out[2, 2, 1] > 200  # old place is white now


# ----------------------------------------------------------------------------------------
# Failures


def test_truncated_jpeg_raises_error_naming_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "broken.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg.*truncated"):
        load_image(path)


def test_text_file_named_jpg_raises_error_naming_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg: not an image") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_empty_bytes_raise_decode_error():
    with pytest.raises(ImageDecodeError, match="empty.png"):
        decode_image(b"", "empty.png")


def test_decompression_bomb_is_refused(monkeypatch):
    from scenimefy.data import decode as dec

    data = _encode(Image.new("L", (64, 64)), "PNG")
    monkeypatch.setattr(dec, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="bomb.png.*exceeds the limit"):
        dec.decode_image(data, "bomb.png")


def test_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


# ----------------------------------------------------------------------------------------
# Listing and resizing


def test_list_image_files_recursive_sorted_case_insensitive_skips_hidden(tmp_path):
    for rel in [
        "b.PNG",
        "a.jpg",
        "sub/c.JpEg",
        "sub/deep/d.webp",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
        "sub/f.tiff",
    ]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [os.path.relpath(p, tmp_path) for p in list_image_files(str(tmp_path))]
    assert got == ["a.jpg", "b.PNG", "sub/c.JpEg", "sub/deep/d.webp", "sub/f.tiff"]


def test_list_image_files_single_file_and_missing_path(tmp_path):
    f = tmp_path / "one.png"
    f.write_bytes(b"x")
    assert list_image_files(str(f)) == [str(f)]
    with pytest.raises(FileNotFoundError, match="does not exist.*nope"):
        list_image_files(str(tmp_path / "nope"))


def test_image_extensions_are_lowercase_suffixes():
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
    assert {".jpg", ".png", ".webp", ".gif", ".tiff"} <= set(IMAGE_EXTENSIONS)


def test_resize_square_shape_dtype_and_upscaling():
    img = Image.new("RGB", (30, 10), (10, 20, 30))
    out = resize_square(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out == [10, 20, 30]).all()
    assert resize_square(Image.new("L", (4, 4), 9), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="positive"):
        resize_square(img, 0)


@pytest.mark.skipif(not SHARED_PHOTOS.is_dir(), reason="shared photos not present")
def test_real_photos_all_decode_to_rgb():
    files = list_image_files(str(SHARED_PHOTOS))
    assert len(files) >= 5
    for f in files:
        img = load_image(f)
        assert img.mode == "RGB" and min(img.size) > 100, f
        assert resize_square(img, 32).shape == (32, 32, 3)


def test_decoding_and_demo_data_import_neither_torch_nor_ray():
    import subprocess
    import sys

    code = (
        "import sys, scenimefy.data.decode, scenimefy.demo.scenes, scenimefy.data.images; "
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
