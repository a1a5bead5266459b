"""Videos through the translator: decode with PyAV (FFmpeg), translate frames in batches, encode.

`translate_video(generator, src, dst)` is the core (path in, path out) that `scenimefy translate`
and a serving front end call. Frames keep the source's size (or are downscaled to `max_side`),
frame rate and timestamps; audio streams are copied packet for packet. The output container is the
source's (mp4, mov, mkv, webm): H.264 video in mp4/mov/mkv, VP9 in webm, so the copied audio is
always one the container accepts.

Rotation: a phone stores a portrait video as landscape frames plus a display matrix (the
`rotate` of older tools) telling players to turn them. Frames are translated as stored and the
source's display matrix is written on the output stream, so players show the result upright,
exactly as they show the source (README "Video"). `probe_video` reads it with the sizes.

Temporal stability: G normalises every layer with the frame's own instance-norm statistics, so
content entering or leaving the picture shifts the colours of the whole frame and the video
flickers. With `smoothing` > 0 every InstanceNorm2d normalises frame t with an exponential moving
average of the statistics of frames 0..t (weight `smoothing` on the past), the same mechanism the
tiled mode uses to share statistics across tiles (`_instance_norm_statistics`). `flicker` measures
the result (docs/deviations.md has no entry: the authors translate single images only).

No Ray and no MLflow here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from scenimefy.data.images import atomic_path, from_uint8, to_uint8
from scenimefy.inference.tone import keep_tone as keep_tone_of
from scenimefy.inference.translate import MemoryPlan, _instance_norm_statistics, padded_size, translate_batch
from scenimefy.stages.device import resolve_device

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm")

# Encoders tried in order per output container; the first one this FFmpeg build has is used.
_ENCODERS = {".webm": ("libvpx-vp9", "libvpx"), "default": ("libx264", "h264", "mpeg4")}
# libx264 at CRF 18 is visually lossless for most content; VP9 in constant-quality mode.
_ENCODER_OPTIONS = {"libx264": {"crf": "18", "preset": "medium"}, "libvpx-vp9": {"crf": "24", "b": "0"}}


class VideoError(ValueError):
    """A video that cannot be translated (unreadable, no video stream, no frames); one line."""


class VideoLimitError(VideoError):
    """A video over a caller's limit (`max_frames`, `deadline` of `translate_video`); one line."""


def is_video(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class VideoReport:
    """One translated video: where it went, how many frames, at what rate, and the audio kept."""

    source: str
    output: str
    frames: int
    width: int
    height: int
    fps: float  # the source's average frame rate
    seconds: float  # wall time of decoding, translating and encoding
    audio_streams: int = 0
    rotation: int = 0  # counter-clockwise degrees players turn the frames by (the display matrix)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------
# Statistics smoothed over time


class StatisticsSmoother:
    """The `mix` of `_instance_norm_statistics` for consecutive frames: per InstanceNorm2d, an
    exponential moving average of the per-channel mean and variance,

        m_t = smoothing * m_{t-1} + (1 - smoothing) * mean_t,   m_0 = mean_0   (same for var)

    run in order over the batch dimension and carried from one batch to the next, so the result
    does not depend on the batch size. smoothing 0 is per-frame normalisation."""

    def __init__(self, smoothing: float):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing={smoothing}: expected 0 <= smoothing < 1 (0: per-frame statistics)")
        self.smoothing = smoothing
        self.state: dict[torch.nn.Module, tuple[Tensor, Tensor]] = {}

    def __call__(self, module: torch.nn.Module, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        a = self.smoothing
        prev = self.state.get(module)
        means, variances = [], []
        for i in range(mean.shape[0]):
            m, v = mean[i : i + 1], var[i : i + 1]
            if prev is not None:
                m, v = a * prev[0] + (1 - a) * m, a * prev[1] + (1 - a) * v
            prev = (m, v)
            means.append(m)
            variances.append(v)
        self.state[module] = prev
        return torch.cat(means), torch.cat(variances)


def has_instance_norm(generator: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.InstanceNorm2d) for m in generator.modules())


@torch.inference_mode()
def translate_frames(
    generator: torch.nn.Module,
    frames: Iterable[Tensor],
    *,
    batch_size: int = 4,
    smoothing: float = 0.0,
    keep_tone: float = 0.0,
    pass_lock: contextlib.AbstractContextManager | None = None,
) -> Iterator[Tensor]:
    """Translate a sequence of (3, H, W) frames in [-1, 1] of one size, `batch_size` per G pass.

    Yields the (3, H, W) translations in order. `smoothing` > 0 smooths the instance-norm
    statistics over time (`StatisticsSmoother`); it needs a PyTorch generator (a ValueError for
    a backend without InstanceNorm2d modules, such as onnxruntime). `pass_lock` (a
    `threading.Lock`, say) is held around each G pass, and the smoothing hooks are on the
    generator only inside it, so a server can share one generator between a video and other
    requests, their passes taking turns. `keep_tone` > 0 puts each frame's brightness, contrast
    and colour cast back on its translation (scenimefy.inference.tone).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    smoother = StatisticsSmoother(smoothing)  # validates smoothing
    if smoothing > 0 and not has_instance_norm(generator):
        raise ValueError(
            f"smoothing={smoothing} needs the PyTorch generator (its instance norms); "
            "use --backend torch or translate.video_smoothing=0"
        )

    def run(batch: list[Tensor]) -> list[Tensor]:
        with contextlib.ExitStack() as stack:
            if pass_lock is not None:
                stack.enter_context(pass_lock)
            if smoothing > 0:
                stack.enter_context(_instance_norm_statistics(generator, {}, record=False, mix=smoother))
            ys = translate_batch(generator, batch)
        return [keep_tone_of(y, x, keep_tone) for x, y in zip(batch, ys, strict=True)]

    batch: list[Tensor] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)


def flicker(outputs: Sequence[np.ndarray | Tensor], inputs: Sequence[np.ndarray | Tensor]) -> float:
    """Temporal flicker of a translated clip: the mean absolute difference between consecutive
    output frames minus that of the input frames (same value scale as the frames, e.g. 0-255 for
    uint8). Motion in the source moves both terms; what is left is change the translation adds.
    """
    if len(outputs) != len(inputs) or len(outputs) < 2:
        raise ValueError(f"flicker needs two equally long clips of >= 2 frames, got {len(outputs)} and {len(inputs)}")

    def mean_step(frames: Sequence[np.ndarray | Tensor]) -> float:
        arr = [np.asarray(f, dtype=np.float64) for f in frames]
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(arr[:-1], arr[1:])]))

    return mean_step(outputs) - mean_step(inputs)


# ----------------------------------------------------------------------------------------
# Files


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _encoder(ext: str) -> str:
    import av

    for name in _ENCODERS.get(ext, _ENCODERS["default"]):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # this FFmpeg build lacks the encoder
            continue
    raise VideoError(f"no video encoder for {ext} in this FFmpeg build (tried {', '.join(_ENCODERS['default'])})")


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The encoded frame size: downscaled so the longer side is <= max_side (0: keep), then each
    side rounded down to an even number (4:2:0 chroma needs even sides), at least 2."""
    if max_side < 0:
        raise ValueError(f"max_side={max_side}: expected >= 0 (0 keeps the size)")
    if max_side and max(width, height) > max_side:
        s = max_side / max(width, height)
        width, height = round(width * s), round(height * s)
    return max(2, width - width % 2), max(2, height - height % 2)


def _open_input(src, name: str | None = None):
    """An open container with a video stream; `src` is a path or a seekable binary file."""
    import av

    name = name or (src if isinstance(src, str) else "upload")
    try:
        container = av.open(src)
    except av.FFmpegError as e:
        raise VideoError(f"{name}: not a readable video ({_one_line(e)})") from None
    except OSError as e:
        raise VideoError(f"{name}: cannot open ({_one_line(e)})") from None
    if not container.streams:
        container.close()
        raise VideoError(f"{name}: not a readable video (no stream found in it)")
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: no video stream (expected a video file: {' '.join(VIDEO_EXTENSIONS)})")
    return container


# FFmpeg's display matrix (9 int32: 16.16 fixed point, the last column 2.30) of an unturned picture.
IDENTITY_MATRIX = (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a video's header and first frame."""

    width: int  # the frames as stored (and translated)
    height: int
    frames: int  # the container's frame count, else duration x frame rate; 0 when neither is given
    fps: float
    rotation: int  # counter-clockwise degrees in (-180, 180] players turn the stored frames by
    display_matrix: tuple[int, ...] | None  # FFmpeg's 3x3 matrix, None when the frames are shown as stored
    audio_streams: int

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as players show the video: the stored size turned by `rotation`."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def _degrees(angle: float | None) -> int:
    """An angle in whole degrees in (-180, 180]."""
    degrees = round(angle or 0) % 360
    return degrees - 360 if degrees > 180 else degrees


def probe_video(src, name: str | None = None) -> VideoInfo:
    """Sizes, frame count, rate and display matrix of a video (a path or a seekable binary file),
    decoding only its first frame. VideoError (one line) for what `translate_video` would refuse:
    unreadable, no video stream, a codec FFmpeg cannot decode, no frames."""
    import av

    name = name or (os.fspath(src) if isinstance(src, (str, os.PathLike)) else "upload")
    container = _open_input(os.fspath(src) if isinstance(src, os.PathLike) else src, name)
    try:
        vin = container.streams.video[0]
        if vin.codec_context is None:
            raise VideoError(f"{name}: FFmpeg cannot decode the video codec of this file")
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        frames = vin.frames
        if not frames and vin.duration and vin.time_base:
            frames = round(float(vin.duration * vin.time_base * rate))
        elif not frames and container.duration:
            frames = round(container.duration / 1e6 * float(rate))
        first = None
        try:
            for frame in container.decode(vin):
                first = frame
                break
        except av.FFmpegError as e:
            raise VideoError(f"{name}: cannot decode its first frame ({_one_line(e)})") from None
        if first is None:
            raise VideoError(f"{name}: the video stream has no frames")
        matrix = None
        try:
            side = first.side_data.get("DISPLAYMATRIX") if first.side_data else None
        except (KeyError, TypeError, ValueError):  # a PyAV that keys side data otherwise: no rotation read
            side = None
        if side is not None:
            values = tuple(int(v) for v in np.frombuffer(bytes(side), dtype=np.int32)[:9])
            matrix = values if len(values) == 9 and values != IDENTITY_MATRIX else None
        return VideoInfo(
            width=vin.codec_context.width,
            height=vin.codec_context.height,
            frames=int(frames or 0),
            fps=float(rate),
            rotation=_degrees(first.rotation) if matrix else 0,
            display_matrix=matrix,
            audio_streams=len(container.streams.audio),
        )
    finally:
        container.close()


def translate_video(
    generator: torch.nn.Module,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    batch_size: int = 4,
    max_side: int = 0,
    smoothing: float = 0.8,
    keep_tone: float = 0.0,
    device: str | torch.device = "cpu",
    memory_budget_gib: float = 0.0,
    progress: bool = True,
    pass_lock: contextlib.AbstractContextManager | None = None,
    max_frames: int = 0,
    deadline: float | None = None,
) -> VideoReport:
    """Translate the video `src` into `dst` (same container type; written atomically).

    Frames are decoded, optionally downscaled (longer side <= `max_side`), translated
    `batch_size` at a time (fewer when a `MemoryPlan` says a batch would not fit) with
    instance-norm statistics smoothed over time (`smoothing`, 0: per frame), and encoded at the
    source's timestamps; audio streams are copied. `keep_tone` > 0: each frame's tone is put
    back on its translation (scenimefy.inference.tone). A progress bar shows frames/s and the time
    left. Raises VideoError (one line) for an unreadable file, a missing video stream, a codec
    FFmpeg cannot decode or a clip without frames; `dst` is then not created, and a run killed
    midway leaves only a hidden temporary file, never a partial `dst`. With a generator that has
    no instance norms (onnxruntime) smoothing is skipped with a note on stderr.

    The source's display matrix (phone rotation) is written on the output unchanged. For a server:
    `pass_lock` is held around each G pass (`translate_frames`); past `max_frames` frames (0: no
    limit) or the `deadline` (a `time.monotonic()` value) it stops with a VideoLimitError.
    """
    import time

    import av

    src, dst = os.fspath(src), os.fspath(dst)
    ext = os.path.splitext(dst)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"{dst}: the output must end in one of {' '.join(VIDEO_EXTENSIONS)}")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"output {dst} would overwrite the input; choose another output folder")
    device = resolve_device(device)
    generator = generator.to(device).eval()
    if smoothing > 0 and not has_instance_norm(generator):
        tqdm.write(f"{src}: this backend has no instance norms to smooth; translating frame by frame", file=sys.stderr)
        smoothing = 0.0
    started = time.perf_counter()

    info = probe_video(src)
    container = _open_input(src)
    try:
        vin = container.streams.video[0]
        vin.thread_type = "AUTO"
        if vin.codec_context is None:
            raise VideoError(f"{src}: FFmpeg cannot decode the video codec of this file")
        width, height = output_size(vin.codec_context.width, vin.codec_context.height, max_side)
        if width < 8 or height < 8:
            raise VideoError(f"{src}: frames of {width}x{height} are too small (the generator needs >= 8 px a side)")
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        audio = list(container.streams.audio)
        total = vin.frames or (int(float(container.duration / 1e6) * rate) if container.duration else None)
        plan = MemoryPlan.for_generator(generator, device, memory_budget_gib)
        per_pass = plan.batch_for(*padded_size(height, width), batch_size)
        encoder = _encoder(ext)

        with atomic_path(dst) as tmp:
            out = av.open(tmp, "w")
            try:
                vout = out.add_stream(encoder, rate=rate, options=_ENCODER_OPTIONS.get(encoder, {}))
                vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
                vout.time_base = vin.time_base
                if info.display_matrix and hasattr(vout, "set_display_matrix"):
                    vout.set_display_matrix(info.display_matrix)
                elif info.display_matrix:  # PyAV before set_display_matrix (2026) cannot write it
                    tqdm.write(
                        f"{src}: rotated {info.rotation} degrees by its display matrix, which this PyAV cannot "
                        "write: the output shows the frames as stored (pip install -U av)",
                        file=sys.stderr,
                    )
                aouts = {a.index: out.add_stream_from_template(a) for a in audio}
                timestamps: list[tuple[int | None, Fraction | None]] = []
                bar = tqdm(total=total or None, disable=not progress, unit="frame", desc=os.path.basename(src))
                written = 0

                def decoded() -> Iterator[Tensor]:
                    for packet in container.demux(vin, *audio):
                        if packet.stream.type == "audio":
                            if packet.dts is not None:  # the demuxer's empty flush packets are not muxed
                                packet.stream = aouts[packet.stream.index]
                                out.mux(packet)
                            continue
                        for frame in packet.decode():  # the flush packet drains the decoder
                            if max_frames and len(timestamps) >= max_frames:
                                raise VideoLimitError(f"{src}: more than {max_frames} frames, over the limit")
                            if deadline is not None and time.monotonic() > deadline:
                                raise VideoLimitError(f"{src}: not done in time after {written} frame(s)")
                            timestamps.append((frame.pts, frame.time_base))
                            rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
                            yield from_uint8(rgb)[0]

                def encode(y: Tensor) -> None:
                    nonlocal written
                    pts, time_base = timestamps[written]
                    frame = av.VideoFrame.from_ndarray(to_uint8(y), format="rgb24")
                    frame.pts, frame.time_base = pts, time_base
                    for p in vout.encode(frame):
                        out.mux(p)
                    written += 1
                    bar.update(1)

                try:
                    ys = translate_frames(
                        generator,
                        decoded(),
                        batch_size=per_pass,
                        smoothing=smoothing,
                        keep_tone=keep_tone,
                        pass_lock=pass_lock,
                    )
                    for y in ys:
                        encode(y)
                    if written == 0:
                        raise VideoError(f"{src}: the video stream has no frames")
                    for p in vout.encode():
                        out.mux(p)
                except av.FFmpegError as e:
                    raise VideoError(f"{src}: cannot decode after {written} frame(s) ({_one_line(e)})") from None
                finally:
                    bar.close()
            finally:
                out.close()
    finally:
        container.close()
    return VideoReport(
        source=src,
        output=dst,
        frames=written,
        width=width,
        height=height,
        fps=float(rate),
        seconds=time.perf_counter() - started,
        audio_streams=len(audio),
        rotation=info.rotation,
    )


# ----------------------------------------------------------------------------------------
# Many videos


@dataclass
class VideosReport:
    """What `translate_videos` did: the videos translated (input order) and those skipped."""

    written: list[VideoReport] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def plan_videos(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(source, output) for every video among `inputs`: video files named directly, and video
    files in folders (recursively, sub-folders kept). An output keeps the stem and container of
    its source; clashing names get `_1`, `_2`, ... ValueError if an output would be an input."""
    out_dir = os.fspath(out_dir)
    candidates: list[tuple[str, str]] = []
    for item in map(os.fspath, inputs):
        if os.path.isdir(item):
            for dirpath, dirnames, filenames in os.walk(item, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = os.path.relpath(dirpath, item)
                for name in sorted(filenames):
                    if not name.startswith(".") and is_video(name):
                        candidates.append(
                            (os.path.join(dirpath, name), os.path.normpath(os.path.join(out_dir, rel, name)))
                        )
        elif is_video(item):
            candidates.append((item, os.path.join(out_dir, os.path.basename(item))))
    sources = {os.path.realpath(s) for s, _ in candidates}
    plan, taken, seen = [], set(), set()
    for src, out in candidates:
        if os.path.realpath(src) in seen:
            continue
        seen.add(os.path.realpath(src))
        base, ext = os.path.splitext(out)
        n = 0
        while os.path.normcase(os.path.abspath(out)) in taken:
            n += 1
            out = f"{base}_{n}{ext}"
        taken.add(os.path.normcase(os.path.abspath(out)))
        if os.path.realpath(out) in sources:
            raise ValueError(
                f"output {out} would overwrite the input {src}; choose an output folder outside the inputs"
            )
        plan.append((src, out))
    return plan


def translate_videos(
    generator: torch.nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    **kwargs,
) -> VideosReport:
    """`translate_video` for every video of `plan_videos(inputs, out_dir)`; a video that fails
    with a VideoError is skipped (said on stderr, listed in the report), the others go on."""
    report = VideosReport()
    for src, dst in plan_videos(inputs, out_dir):
        if not os.path.isfile(src):
            report.skipped.append((src, "no such file"))
            continue
        try:
            report.written.append(translate_video(generator, src, dst, **kwargs))
        except VideoError as e:
            reason = str(e).removeprefix(f"{src}: ")
            report.skipped.append((src, reason))
            tqdm.write(f"skipped {src}: {reason}", file=sys.stderr)
    return report


# ----------------------------------------------------------------------------------------
# A synthetic clip with known motion, for measuring flicker


def pan_zoom_boxes(width: int, height: int, photo_size: tuple[int, int], frames: int, zoom: float = 1.25):
    """Crop boxes (x0, y0, box_width, box_height) in photo pixels of a camera panning left to right
    across a (W, H) photo while zooming in by `zoom` (linear in time), framing width x height."""
    w, h = photo_size
    aspect = width / height
    box_h0 = min(h, w / aspect / 1.2)  # leave room to pan
    boxes = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        bh = box_h0 / (1 + (zoom - 1) * t)
        bw = bh * aspect
        boxes.append((t * (w - bw), (h - bh) / 2, bw, bh))
    return boxes


def pan_zoom_clip(
    image: np.ndarray, frames: int, width: int, height: int, zoom: float = 1.25
) -> tuple[list[np.ndarray], list[tuple[float, float, float, float]]]:
    """`frames` (height, width, 3) uint8 views of an (H, W, 3) photo along `pan_zoom_boxes`
    (bilinear), and the boxes: footage with exactly known motion, content entering and leaving."""
    from PIL import Image

    photo = Image.fromarray(np.ascontiguousarray(image))
    boxes = pan_zoom_boxes(width, height, photo.size, frames, zoom)
    clip = [
        np.asarray(photo.resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + bw, y0 + bh)))
        for x0, y0, bw, bh in boxes
    ]
    return clip, boxes


def warping_error(frames: Sequence[np.ndarray], boxes: Sequence[tuple[float, float, float, float]]) -> float:
    """Mean absolute difference between each frame and the previous frame warped onto it with the
    known camera motion (`pan_zoom_boxes`), over the pixels both frames see; uint8 levels.

    Zero for a clip that changes only by the motion; what the translation adds on top of the
    source clip's own value (resampling) is its flicker."""
    if len(frames) != len(boxes) or len(frames) < 2:
        raise ValueError(f"warping_error needs >= 2 frames and one box each, got {len(frames)} and {len(boxes)}")
    errors = []
    for prev, cur, (px, py, pw, ph), (cx, cy, cw, chh) in zip(frames[:-1], frames[1:], boxes[:-1], boxes[1:]):
        h, w = cur.shape[:2]
        # pixel centres of the current frame -> photo -> previous frame's pixel coordinates
        u = (np.arange(w) + 0.5) * cw / w + cx
        v = (np.arange(h) + 0.5) * chh / h + cy
        pu = (u - px) * w / pw - 0.5
        pv = (v - py) * h / ph - 0.5
        grid_x = torch.from_numpy(pu / (w - 1) * 2 - 1).float()
        grid_y = torch.from_numpy(pv / (h - 1) * 2 - 1).float()
        grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1)[None]  # (1, h, w, 2)
        src = torch.from_numpy(np.asarray(prev, dtype=np.float32)).permute(2, 0, 1)[None]
        warped = torch.nn.functional.grid_sample(src, grid, mode="bilinear", align_corners=True)[0].permute(1, 2, 0)
        valid = (grid.abs() <= 1).all(dim=-1)[0]
        diff = (warped - torch.from_numpy(np.asarray(cur, dtype=np.float32))).abs().mean(dim=-1)
        errors.append(float(diff[valid].mean()))
    return float(np.mean(errors))
