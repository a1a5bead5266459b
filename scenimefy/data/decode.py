"""Tolerant image decoding: any file a user is likely to have becomes an RGB `PIL.Image`.

JPEG, PNG, WebP, TIFF, GIF, BMP, HEIC/HEIF (pillow-heif), AVIF, JPEG 2000, PNM and TGA.
EXIF orientation is applied; L, LA, 1, P (with or without transparency), PA, RGBA, CMYK,
YCbCr, 16-bit and float images are converted to 8-bit RGB, transparency composited on
white. Anything that cannot be decoded raises `ImageDecodeError` with one line naming the
file and the reason, so the Ray layer can skip and count it instead of crashing mid-run.
No Ray and no torch here.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".heic",  # phones' default (iPhone); through pillow-heif
    ".heif",
    ".avif",
    ".jp2",
    ".ppm",
    ".pgm",
    ".pnm",
    ".tga",
)


def _register_heif() -> bool:
    """Teach PIL to open HEIC/HEIF (pillow-heif, a dependency); False where it is missing."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_SUPPORTED = _register_heif()

# Refuse anything larger than this many pixels (PIL's own default, about 9,500 x 9,500): a
# decompression bomb or a panorama nobody trains on at 256 px. Checked from the header,
# before decoding; PIL's warning at the same limit is turned into the same error.
MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(ValueError):
    """An image file could not be decoded; the message names the file and the reason."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------
# Mode conversion: every PIL mode to 8-bit RGB


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """RGBA -> RGB with transparent pixels becoming white (not black, PIL's default)."""
    a = np.asarray(rgba, dtype=np.float32)  # (H, W, 4)
    alpha = a[..., 3:4] / 255.0
    rgb = a[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def _integer_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer grey (I;16*, I) -> 8-bit L by value range, not by clipping.

    Values in 0..65535 (16-bit sources, the usual case) map linearly to 0..255; a 32-bit
    image outside that range is stretched from its own min..max instead.
    """
    v = np.asarray(img).astype(np.float64)  # (H, W); handles I;16B byte order
    lo, hi = float(v.min(initial=0.0)), float(v.max(initial=0.0))
    if lo >= 0.0 and hi <= 65535.0:
        v = v * (255.0 / 65535.0)
    else:
        v = (v - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.clip(np.rint(v), 0, 255).astype(np.uint8), "L")


def _float_to_l(img: Image.Image) -> Image.Image:
    """32-bit float grey (F) -> L: [0, 1] data is scaled by 255, [0, 255] kept, else min..max."""
    v = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(v.min(initial=0.0)), float(v.max(initial=0.0))
    if lo >= 0.0 and hi <= 1.0:
        v = v * 255.0
    elif lo < 0.0 or hi > 255.0:
        v = (v - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.clip(np.rint(v), 0, 255).astype(np.uint8), "L")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK -> RGB through the embedded ICC profile when there is one, else PIL's formula."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except Exception:  # a broken profile or no littlecms: fall back to the plain formula
            pass
    return img.convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(img.convert("RGBA"))
    if mode == "P":
        if "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA":
            return _composite_on_white(img.convert("RGBA"))
        return img.convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode.startswith("I;16") or mode == "I":
        return _integer_to_l(img).convert("RGB")
    if mode == "F":
        return _float_to_l(img).convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    # L, YCbCr, RGBX, LAB, HSV, ...: PIL's own conversion is the right one.
    return img.convert("RGB")


# ----------------------------------------------------------------------------------------
# Decoding


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode encoded image bytes into an 8-bit RGB image (EXIF orientation applied).

    Animated images give their first frame. Raises `ImageDecodeError` (one line naming
    `name` and the reason) for truncated, corrupt, non-image or absurdly large data.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns (instead of failing) between MAX_IMAGE_PIXELS and 2x; we fail.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(f"cannot decode image {name}: empty size {width}x{height}")
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    f"cannot decode image {name}: {width}x{height} pixels exceeds the limit of "
                    f"{MAX_IMAGE_PIXELS} (decompression bomb?); downscale it first"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF / WebP / TIFF stack: first frame
            img.load()  # force decoding now so truncation fails here, not in a worker later
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # malformed EXIF block: keep the pixels as stored
                pass
            rgb = _to_rgb(img)
            rgb.load()
            return rgb
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"cannot decode image {name}: decompression bomb: {_one_line(e)}") from e
    except Image.DecompressionBombWarning as e:
        raise ImageDecodeError(f"cannot decode image {name}: decompression bomb: {_one_line(e)}") from e
    except Image.UnidentifiedImageError as e:
        if not HEIF_SUPPORTED and data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypheif"):
            raise ImageDecodeError(
                f"cannot decode image {name}: HEIC/HEIF needs pillow-heif (pip install pillow-heif)"
            ) from e
        raise ImageDecodeError(f"cannot decode image {name}: not an image file (unidentified format)") from e
    except Exception as e:  # truncated streams (OSError), broken headers, unsupported modes
        reason = _one_line(e) or type(e).__name__
        raise ImageDecodeError(f"cannot decode image {name}: {reason}") from e


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read a local image file and decode it with `decode_image` (RGB, orientation applied)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return decode_image(data, name=path)


# ----------------------------------------------------------------------------------------
# Listing and resizing


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_folders(root: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    """(folder, its non-hidden file names) for `root` and every folder below it, each once.

    Symlinked folders are followed, but a folder already visited (the same device and inode,
    reached through a link) is not entered again, so a symlink cycle cannot loop. Hidden
    files and folders (leading dot) are skipped.
    """
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []  # reached again through a link: already listed
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, [f for f in filenames if not f.startswith(".")]


def list_image_files(root: str | os.PathLike) -> list[str]:
    """All image files under `root`, recursively, sorted; hidden files and folders skipped.

    A path to a single file returns `[path]` whatever its suffix. Symlinks are followed, each
    folder listed once (`walk_folders`: a symlink cycle cannot loop).
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"image path does not exist: {root!r} (expected a folder of images or an image file)")
    if os.path.isfile(root):
        return [root]
    found: list[str] = []
    for dirpath, filenames in walk_folders(root):
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    return sorted(found)


def resize_square(img: Image.Image, size: int) -> np.ndarray:
    """Bicubic resize to `size` x `size` (aspect ratio not kept, as the authors do).

    Returns (size, size, 3) uint8. Smaller images are upscaled; the caller warns about it.
    """
    if size <= 0:
        raise ValueError(f"resize_square: size must be positive, got {size}")
    if img.mode != "RGB":
        img = _to_rgb(img)
    out = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.uint8).copy()
