"""What the HTTP API does with one request, apart from Ray: limits, decoding, resizing, encoding.

Every problem with the input becomes an `ApiError` carrying an HTTP status and one line naming
the problem and the fix; the ingress answers it as `{"error": ...}` JSON. Decoding goes through
`scenimefy.data.decode.decode_image`, the decoder of training and `scenimefy translate`; videos
are recognised by their first bytes (`video_container`) and checked from their header and first
frame (`check_video`, `scenimefy.inference.video.probe_video`) before the replica decodes them all.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from scenimefy.data.decode import ImageDecodeError, decode_image

# Output formats: name -> (PIL format, media type, file extension).
FORMATS: dict[str, tuple[str, str, str]] = {
    "png": ("PNG", "image/png", "png"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "jpg": ("JPEG", "image/jpeg", "jpg"),
    "webp": ("WEBP", "image/webp", "webp"),
}


class ApiError(Exception):
    """A request the API refuses: `status` (4xx, or 503/504) and a one-line `message`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Options:
    """Per-request options (query string or multipart fields)."""

    max_side: int  # downscale the longer side to this before translating, 0: keep
    format: str  # a key of FORMATS
    quality: int  # JPEG / WebP quality


def parse_options(values: Mapping[str, Any], default_max_side: int) -> Options:
    """Options from the request's fields; unknown values are a 400 naming the field and the valid ones."""

    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = values.get(name)
        if raw is None or str(raw).strip() == "":
            return default
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ApiError(400, f"{name}={raw!r}: expected an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise ApiError(400, f"{name}={value}: expected an integer from {low} to {high}")
        return value

    max_side = integer("max_side", default_max_side, 0, 1 << 16)
    if default_max_side and (max_side == 0 or max_side > default_max_side):
        max_side = default_max_side  # the operator's cap holds
    fmt = str(values.get("format") or "png").strip().lower()
    if fmt not in FORMATS:
        raise ApiError(400, f"format={fmt!r}: expected one of {', '.join(sorted(set(FORMATS) - {'jpg'}))}")
    return Options(max_side=max_side, format=fmt, quality=integer("quality", 92, 1, 100))


def check_size(num_bytes: int, max_bytes: int, setting: str = "serve.max_upload_mib") -> None:
    if num_bytes > max_bytes:
        raise ApiError(
            413,
            f"upload of {num_bytes} bytes is over the limit of {max_bytes} bytes "
            f"({max_bytes / 2**20:g} MiB); send a smaller file or raise {setting}",
        )


def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """An RGB image from uploaded bytes; ApiError 400 (empty), 413 (too many pixels), 415 (not an
    image, or a format or mode this server cannot read) or 422 (a damaged image)."""
    if not data:
        raise ApiError(400, f"{name}: empty upload; send the image file's bytes (or multipart field 'image')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # the header only: no pixels decoded yet
                width, height = header.size
    except Image.DecompressionBombError:
        width = height = -1
    except Exception:
        width = height = 0  # decode_image names the problem below
    if width < 0 or width * height > max_pixels:
        size = f"{width}x{height} = {width * height} pixels" if width > 0 else "too many pixels"
        raise ApiError(
            413, f"{name}: {size}, over the limit of {max_pixels}; downscale it first or raise serve.max_pixels"
        )
    try:
        return decode_image(data, name=name)
    except ImageDecodeError as e:
        message = str(e)
        if "not an image file" in message or "needs pillow-heif" in message:
            raise ApiError(
                415,
                f"{message}; send a JPEG, PNG, WebP, HEIC, TIFF, GIF or BMP image, or an MP4, MOV, MKV or WebM video",
            ) from None
        if "exceeds the limit" in message or "decompression bomb" in message:
            raise ApiError(413, message) from None
        raise ApiError(422, f"{message}; the file is damaged or truncated, send it again") from None


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is at most `max_side` (aspect kept, bicubic); 0 keeps the size."""
    w, h = img.size
    if max_side <= 0 or max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)


def restore_size(array: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The translated (H, W, 3) uint8 array as an image of `size` (width, height): resized back up
    when the request was downscaled, so a result always has its original's size."""
    img = Image.fromarray(array, "RGB")
    return img if img.size == size else img.resize(size, Image.BICUBIC)


def encode(img: Image.Image, options: Options) -> tuple[bytes, str]:
    """Encoded bytes and media type of the result."""
    pil_format, media_type, _ = FORMATS[options.format]
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"quality": options.quality} if pil_format in ("JPEG", "WEBP") else {"compress_level": 1}
    img.save(buf, format=pil_format, **kwargs)
    return buf.getvalue(), media_type


def result_name(upload_name: str, options: Options) -> str:
    """`photo.jpg` -> `photo_anime.png` (the download name the page and Content-Disposition use)."""
    return f"{_stem(upload_name)}_anime.{FORMATS[options.format][2]}"


def _stem(upload_name: str) -> str:
    stem = os.path.splitext(os.path.basename(upload_name or "image"))[0] or "image"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100]


# ----------------------------------------------------------------------------------------
# Videos

# Containers the API takes and answers in (the answer keeps the upload's container).
VIDEO_MEDIA_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska", ".webm": "video/webm"}
# ISO base media brands of still images (HEIC, AVIF): an `ftyp` box alone does not make a video.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def video_container(data: bytes, name: str, content_type: str = "") -> str | None:
    """The container extension of an uploaded video (".mp4", ".mov", ".mkv", ".webm"), None for
    anything else. Recognised by the first bytes (an ISO `ftyp` box of a video brand; an EBML
    header), else by a video file name or a video/* media type."""
    ext = os.path.splitext(name or "")[1].lower()
    if data[4:8] == b"ftyp" and data[8:12] not in _IMAGE_BRANDS:
        return ".mov" if data[8:12] == b"qt  " or ext == ".mov" else ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm" if b"webm" in data[:64] else ".mkv"
    if ext in VIDEO_MEDIA_TYPES:
        return ext
    by_type = {v: k for k, v in VIDEO_MEDIA_TYPES.items()}
    return by_type.get(content_type.split(";")[0].strip().lower())


def _recognised(data: bytes) -> bool:
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class VideoPlan:
    """An accepted video: the probe's facts, the translated frame size and the frame limit."""

    width: int  # translated (and encoded) frame size, after max_side
    height: int
    frames: int  # the container's count or estimate, 0 if unknown
    rotation: int
    max_frames: int  # the replica stops past this many frames (413)


def check_video(data: bytes, name: str, max_side: int, max_pixels: int) -> VideoPlan:
    """Probe an uploaded video (header and first frame) and enforce serve.max_video_pixels
    (frames x translated pixels): ApiError 413 (too long or too large), 415 (no video stream, a
    codec FFmpeg cannot decode, not a video) or 422 (damaged or truncated)."""
    from scenimefy.inference.video import VideoError, output_size, probe_video

    try:
        info = probe_video(io.BytesIO(data), name)
    except VideoError as e:
        message = str(e)
        if "no video stream" in message or "cannot decode the video codec" in message:
            raise ApiError(415, f"{message}; send an H.264, H.265, VP8/9 or AV1 video") from None
        if "not a readable video" in message and not _recognised(data):
            raise ApiError(415, f"{message}; send an MP4, MOV, MKV or WebM video, or an image") from None
        raise ApiError(422, f"{message}; the file is damaged or truncated, send it again") from None
    width, height = output_size(info.width, info.height, max_side)
    if width < 8 or height < 8:
        raise ApiError(422, f"{name}: frames of {width}x{height} are too small (the generator needs >= 8 px a side)")
    max_frames = max_pixels // (width * height)
    fix = "send a shorter clip, a smaller max_side or raise serve.max_video_pixels"
    if info.frames > max_frames:
        total = info.frames * width * height
        raise ApiError(
            413,
            f"{name}: {info.frames} frames of {width}x{height} = {total} pixels, over the limit of {max_pixels}; {fix}",
        )
    if max_frames < 1:
        raise ApiError(413, f"{name}: one frame of {width}x{height} is over the limit of {max_pixels} pixels; {fix}")
    return VideoPlan(width, height, info.frames, info.rotation, max_frames)


def video_result_name(upload_name: str, ext: str) -> str:
    """`clip.mov` -> `clip_anime.mov`: the answer keeps the upload's container."""
    return f"{_stem(upload_name or 'video')}_anime{ext}"


# Keys of a training config summarised by GET /v1/model: (section, key).
SUMMARY_KEYS = (
    ("run", "name"),
    ("data", "load_size"),
    ("data", "crop_size"),
    ("translator", "n_epochs"),
    ("translator", "n_epochs_decay"),
    ("translator", "batch_size_per_worker"),
    ("translator", "lambda_gan"),
    ("translator", "lambda_gan_p"),
    ("translator", "lambda_style"),
    ("translator", "lambda_src"),
    ("translator", "lambda_hdce"),
    ("translator", "precision"),
)


def model_info(checkpoint: str, arch: Mapping[str, int], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The body of GET /v1/model: the checkpoint's name, the architecture and a training summary."""
    summary: dict[str, Any] = {}
    for section, key in SUMMARY_KEYS:
        value = (config or {}).get(section, {})
        if isinstance(value, Mapping) and key in value:
            summary[f"{section}.{key}"] = value[key]
    name = os.path.basename(os.path.normpath(checkpoint))
    if name == "generator.pt":  # name the run folder, not the file every run writes
        name = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(checkpoint))), name)
    return {
        "checkpoint": name,
        "architecture": {"name": "ResnetGenerator", **dict(arch)},
        "source": "scenimefy snapshot" if config is not None else "CUT generator state dict (authors' release)",
        "training": summary,
    }
