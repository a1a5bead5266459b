"""Videos: PyAV decode/translate/encode, audio copied, statistics smoothed over frames, bad inputs.

Clips are made here with PyAV: a camera panning and zooming across a real photo (known motion),
with a sine tone as audio.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_photos import PHOTOS

from scenimefy.commands.cli import main
from scenimefy.data.images import from_uint8, to_uint8
from scenimefy.inference.translate import save_translator_snapshot, translate_batch
from scenimefy.inference.video import (
    StatisticsSmoother,
    VideoError,
    VideoLimitError,
    flicker,
    output_size,
    pan_zoom_clip,
    plan_videos,
    probe_video,
    translate_frames,
    translate_video,
    warping_error,
)
from scenimefy.models.translator import ResnetGenerator, init_weights

av = pytest.importorskip("av")
needs_photos = pytest.mark.skipif(not (PHOTOS / "ag_1.jpg").is_file(), reason="shared photos not available")
REPO = Path(__file__).resolve().parents[1]


def _generator(ngf: int = 4, n_blocks: int = 1, seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf=ngf, n_blocks=n_blocks), gain=0.3).eval()


def _photo() -> np.ndarray:
    if (PHOTOS / "ag_1.jpg").is_file():
        return np.asarray(Image.open(PHOTOS / "ag_1.jpg").convert("RGB"))
    rng = np.random.default_rng(0)  # the clip tests that do not compare against photos still run
    return rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    *,
    fps: int = 12,
    audio: bool = True,
    codec: str | None = None,
    rotation: int = 0,
) -> Path:
    """Encode frames (and a 440 Hz tone as long as the clip) with PyAV; `rotation` (counter-clockwise
    degrees) is written as the display matrix a phone writes for a portrait video."""
    ext = path.suffix.lower()
    codec = codec or ("libvpx-vp9" if ext == ".webm" else "libx264")
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if rotation:
            vs.set_display_rotation(rotation)
        if audio:
            acodec = "libopus" if ext == ".webm" else "aac"
            rate = 48000
            aus = out.add_stream(acodec, rate=rate)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if audio:
            n = int(rate * len(frames) / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
            chunk = aus.codec_context.frame_size or 1024
            for start in range(0, n, chunk):
                part = np.ascontiguousarray(np.stack([tone[start : start + chunk]] * 2))
                af = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
                for p in aus.encode(af):
                    out.mux(p)
            for p in aus.encode():
                out.mux(p)
    return path


def read_clip(path: Path) -> tuple[list[np.ndarray], dict]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "rate": v.average_rate,
            "size": (v.codec_context.width, v.codec_context.height),
            "audio": [a.codec_context.name for a in c.streams.audio],
            "video_codec": v.codec_context.name,
        }
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return frames, info


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    frames, _ = pan_zoom_clip(_photo(), 10, 96, 64)
    path = write_clip(tmp_path_factory.mktemp("clips") / "pan.mp4", frames)
    return path, frames


# ----------------------------------------------------------------------------------------
# statistics smoothed over time


def test_smoother_is_the_moving_average_computed_by_hand():
    s = StatisticsSmoother(0.5)
    module = torch.nn.InstanceNorm2d(1)
    mean = torch.tensor([2.0, 4.0, 0.0]).view(3, 1, 1, 1)
    var = torch.tensor([1.0, 3.0, 5.0]).view(3, 1, 1, 1)
    m, v = s(module, mean, var)
    assert m.flatten().tolist() == [2.0, 3.0, 1.5]  # 2; .5*2+.5*4; .5*3+.5*0
    assert v.flatten().tolist() == [1.0, 2.0, 3.5]
    m, v = s(module, torch.tensor([3.5]).view(1, 1, 1, 1), torch.tensor([0.5]).view(1, 1, 1, 1))
    assert m.item() == 2.5 and v.item() == 2.0  # carried over from the previous batch
    with pytest.raises(ValueError, match="smoothing=1"):
        StatisticsSmoother(1.0)


def test_per_frame_mode_is_translate_batch_and_smoothing_ignores_the_batch_size():
    g = _generator()
    frames, _ = pan_zoom_clip(_photo(), 7, 40, 28)
    xs = [from_uint8(f.copy())[0] for f in frames]
    per_frame = list(translate_frames(g, xs, batch_size=3, smoothing=0.0))
    for x, y in zip(xs, per_frame):
        torch.testing.assert_close(y, translate_batch(g, [x])[0], atol=1e-5, rtol=0)  # batched: rounding only
    a = list(translate_frames(g, xs, batch_size=1, smoothing=0.7))
    b = list(translate_frames(g, xs, batch_size=4, smoothing=0.7))
    for ya, yb in zip(a, b):
        torch.testing.assert_close(ya, yb, atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], per_frame[0], atol=1e-5, rtol=0)  # the first frame has no past
    assert (a[-1] - per_frame[-1]).abs().max() > 1e-3  # later frames are normalised differently


class _RecordingLock:
    """A lock that records, at each acquire and release, whether G's instance norms carry hooks."""

    def __init__(self, generator: torch.nn.Module):
        self.norms = [m for m in generator.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
        self.events: list[tuple[str, bool]] = []

    def hooked(self) -> bool:
        return any(m._forward_hooks for m in self.norms)

    def __enter__(self):
        self.events.append(("acquire", self.hooked()))
        return self

    def __exit__(self, *exc):
        self.events.append(("release", self.hooked()))
        return False


def test_the_pass_lock_is_held_per_pass_and_the_smoothing_hooks_only_inside_it():
    # A server shares G between a video and other requests: between two passes G must be plain.
    g = _generator()
    frames, _ = pan_zoom_clip(_photo(), 7, 40, 28)
    xs = [from_uint8(f.copy())[0] for f in frames]
    lock = _RecordingLock(g)
    seen_between = []
    ys = []
    for y in translate_frames(g, xs, batch_size=3, smoothing=0.7, pass_lock=lock):
        seen_between.append(lock.hooked())
        ys.append(y)
    assert lock.events == [("acquire", False), ("release", False)] * 3  # passes of 3, 3 and 1 frames
    assert seen_between == [False] * 7
    for a, b in zip(ys, translate_frames(g, xs, batch_size=7, smoothing=0.7), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # the same smoothing as without a lock


@needs_photos
def test_smoothing_reduces_flicker_on_a_panning_zooming_clip():
    g = _generator(ngf=16, n_blocks=3)
    frames, boxes = pan_zoom_clip(_photo(), 16, 128, 80)
    xs = [from_uint8(f.copy())[0] for f in frames]
    outs = {s: [to_uint8(y) for y in translate_frames(g, xs, batch_size=4, smoothing=s)] for s in (0.0, 0.9)}
    source = warping_error(frames, boxes)
    added = {s: warping_error(ys, boxes) - source for s, ys in outs.items()}
    assert added[0.0] > 0  # the translation adds change the camera motion does not explain
    assert added[0.9] < added[0.0]
    assert flicker(outs[0.9], frames) < flicker(outs[0.0], frames)


def test_warping_error_is_zero_for_a_static_camera_and_positive_for_a_wrong_motion():
    frames, boxes = pan_zoom_clip(_photo(), 4, 48, 32, zoom=1.0)
    still = [frames[0]] * 4
    assert warping_error(still, [boxes[0]] * 4) == pytest.approx(0.0, abs=1e-4)
    assert warping_error(still, boxes) > 1.0  # the boxes say the camera moved; the frames did not


def test_flicker_of_a_copy_is_zero():
    frames, _ = pan_zoom_clip(_photo(), 3, 32, 24)
    assert flicker(frames, frames) == 0.0
    with pytest.raises(ValueError, match="two equally long"):
        flicker(frames[:1], frames[:1])


# ----------------------------------------------------------------------------------------
# files


def test_video_keeps_rate_size_frames_and_audio(tmp_path, clip):
    src, frames = clip
    g = _generator()
    report = translate_video(g, src, tmp_path / "out" / "pan.mp4", batch_size=3, smoothing=0.0, progress=False)
    assert report.frames == len(frames) and (report.width, report.height) == (96, 64)
    assert report.audio_streams == 1 and report.fps == 12.0
    out_frames, info = read_clip(tmp_path / "out" / "pan.mp4")
    in_frames, in_info = read_clip(src)
    assert len(out_frames) == len(frames)
    assert info["rate"] == 12 and info["size"] == (96, 64) and info["audio"] == ["aac"]
    assert info["video_codec"] == "h264"
    with av.open(str(src)) as a, av.open(str(tmp_path / "out" / "pan.mp4")) as b:  # audio copied packet for packet
        pa = [bytes(p) for p in a.demux(audio=0) if p.size]
        pb = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert pa == pb and len(pa) > 3
    # each frame is G of the decoded input frame, up to H.264's 4:2:0 loss, and is not its neighbour
    translated = [to_uint8(translate_batch(g, [from_uint8(f)[0]])[0]).astype(float) for f in in_frames]
    for i in (0, len(frames) - 1):
        right = np.abs(out_frames[i].astype(float) - translated[i]).mean()
        wrong = np.abs(out_frames[i].astype(float) - translated[len(frames) - 1 - i]).mean()
        assert right < 6.0 and right < 0.5 * wrong


def test_max_side_and_webm(tmp_path):
    frames, _ = pan_zoom_clip(_photo(), 4, 100, 60)
    src = write_clip(tmp_path / "c.webm", frames, fps=10)
    report = translate_video(_generator(), src, tmp_path / "o" / "c.webm", max_side=50, progress=False)
    _, info = read_clip(tmp_path / "o" / "c.webm")
    assert info["size"] == (50, 30) == (report.width, report.height)
    assert info["video_codec"] == "vp9" and info["audio"] == ["opus"]
    assert output_size(101, 61, 0) == (100, 60)  # 4:2:0 needs even sides


def _first_frame_rotation(path: Path) -> tuple[int, tuple[int, int]]:
    """The rotation players apply (read from the decoded frame's display matrix) and the stored size."""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return round(frame.rotation) % 360, (frame.width, frame.height)


@pytest.mark.parametrize("ext, rotation", [(".mp4", 90), (".mov", -90), (".webm", 180)])
def test_phone_rotation_is_kept_on_the_output(tmp_path, ext, rotation):
    # a portrait phone video: 64x48 frames as stored, shown turned (48x64 for +-90 degrees)
    frames, _ = pan_zoom_clip(_photo(), 4, 64, 48)
    src = write_clip(tmp_path / f"phone{ext}", frames, fps=10, rotation=rotation)
    info = probe_video(src)
    assert (info.width, info.height, info.rotation, info.frames, info.audio_streams) == (64, 48, rotation, 4, 1)
    assert info.display_size == ((48, 64) if rotation % 180 else (64, 48))
    dst = tmp_path / "out" / f"phone{ext}"
    report = translate_video(_generator(), src, dst, smoothing=0.5, progress=False)
    assert report.rotation == rotation and (report.width, report.height) == (64, 48)
    assert _first_frame_rotation(dst) == (rotation % 360, (64, 48))  # translated as stored, turned by the player
    assert probe_video(dst).display_matrix == info.display_matrix
    plain = write_clip(tmp_path / "plain.mp4", frames, fps=10, audio=False)
    assert probe_video(plain).display_matrix is None and probe_video(plain).rotation == 0
    translate_video(_generator(), plain, tmp_path / "out" / "plain.mp4", progress=False)
    assert _first_frame_rotation(tmp_path / "out" / "plain.mp4") == (0, (64, 48))


def test_frame_and_time_limits_stop_a_video_and_leave_no_output(tmp_path, clip):
    import time

    src, frames = clip
    g = _generator()
    with pytest.raises(VideoLimitError, match=r"more than 4 frames, over the limit"):
        translate_video(g, src, tmp_path / "out" / "a.mp4", max_frames=4, progress=False)
    with pytest.raises(VideoLimitError, match=r"not done in time after 0 frame"):
        translate_video(g, src, tmp_path / "out" / "b.mp4", deadline=time.monotonic() - 1, progress=False)
    assert os.listdir(tmp_path / "out") == []
    report = translate_video(g, src, tmp_path / "out" / "c.mp4", max_frames=len(frames), progress=False)
    assert report.frames == len(frames)


def test_bad_videos_are_one_line_errors_and_leave_no_output(tmp_path, clip):
    src, _ = clip
    g = _generator()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    audio_only = tmp_path / "audio.mkv"
    with av.open(str(audio_only), "w") as out:
        s = out.add_stream("flac", rate=8000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        af.sample_rate, af.pts = 8000, 0
        for p in [*s.encode(af), *s.encode()]:
            out.mux(p)
    empty = tmp_path / "empty.mkv"  # a video stream without a single frame, beside some audio
    with av.open(str(empty), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        s = out.add_stream("flac", rate=8000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        af.sample_rate, af.pts = 8000, 0
        for p in [*s.encode(af), *s.encode()]:
            out.mux(p)
    cases = {garbage: "not a readable video", truncated: "not a readable video", audio_only: "no video stream"}
    cases[empty] = "no frames"
    for bad, message in cases.items():
        dst = tmp_path / "out" / bad.name
        with pytest.raises(VideoError, match=message) as e:
            translate_video(g, bad, dst, progress=False)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
        assert not dst.exists()
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


class _Boom(ResnetGenerator):
    """Fails on its third call, as an interrupted run would."""

    calls = 0

    def forward(self, x, *args, **kwargs):
        _Boom.calls += 1
        if _Boom.calls == 3:
            raise KeyboardInterrupt
        return super().forward(x, *args, **kwargs)


def test_an_interrupted_run_leaves_nothing(tmp_path, clip):
    src, _ = clip
    g = _Boom(ngf=4, n_blocks=1).eval()
    with pytest.raises(KeyboardInterrupt):
        translate_video(g, src, tmp_path / "out" / "pan.mp4", batch_size=2, progress=False)
    assert os.listdir(tmp_path / "out") == []  # neither the output nor its temporary file


KILLED = """
import os, signal, sys, torch
from scenimefy.inference.video import translate_video
from scenimefy.models.translator import ResnetGenerator
class G(ResnetGenerator):
    calls = 0
    def forward(self, x, *a, **k):
        G.calls += 1
        if G.calls == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x, *a, **k)
translate_video(G(ngf=4, n_blocks=1).eval(), sys.argv[1], sys.argv[2], batch_size=2, progress=False)
"""


def test_a_killed_run_leaves_no_file_under_the_final_name(tmp_path, clip):
    src, _ = clip
    dst = tmp_path / "out" / "pan.mp4"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", KILLED, str(src), str(dst)], env=env, timeout=120)
    assert done.returncode == -9
    assert not dst.exists()
    assert all(name.startswith(".pan.mp4.") for name in os.listdir(tmp_path / "out"))  # a hidden temporary only


def test_plan_keeps_folders_and_refuses_to_overwrite_inputs(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/a.mp4", "b.MOV", "c.png"):
        (tmp_path / "in" / name).write_bytes(b"x")
    plan = plan_videos([tmp_path / "in", tmp_path / "in" / "a.mp4"], tmp_path / "out")
    assert plan == [
        (str(tmp_path / "in" / "a.mp4"), str(tmp_path / "out" / "a.mp4")),
        (str(tmp_path / "in" / "b.MOV"), str(tmp_path / "out" / "b.MOV")),
        (str(tmp_path / "in" / "sub" / "a.mp4"), str(tmp_path / "out" / "sub" / "a.mp4")),
    ]
    with pytest.raises(ValueError, match="would overwrite the input"):
        plan_videos([tmp_path / "in"], tmp_path / "in")


@needs_photos
def test_cli_translates_a_folder_of_images_and_videos(tmp_path, clip, capsys):
    src, frames = clip
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "pan.mp4").write_bytes(src.read_bytes())
    (folder / "bad.mov").write_bytes(b"not a video")
    Image.open(PHOTOS / "hf_8.png").convert("RGB").resize((64, 36)).save(folder / "photo.png")
    ckpt = save_translator_snapshot(tmp_path / "g.pt", _generator(), {})
    code = main(
        ["translate", "--checkpoint", ckpt, "--out", str(tmp_path / "o"), "--video-smoothing", "0.5", str(folder)]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "translated 1 image(s) and 1 video(s) (10 frames" in captured.out and "skipped 1" in captured.out
    assert f"skipped {folder / 'bad.mov'}: not a readable video" in captured.err  # said once, as it was skipped
    assert sorted(os.listdir(tmp_path / "o")) == ["pan.mp4", "photo.png"]
    assert len(read_clip(tmp_path / "o" / "pan.mp4")[0]) == len(frames)
    code = main(["translate", "--checkpoint", ckpt, "--out", str(tmp_path / "o2"), "--video-smoothing", "1", str(src)])
    assert code == 2 and "video_smoothing" in capsys.readouterr().err
