"""The serving API's request handling without Ray: options, limits, decoding errors, sizes, the
serve config section and the `scenimefy serve` command line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from scenimefy.config import ConfigError, ServeConfig
from scenimefy.serve import handling
from scenimefy.serve.handling import ApiError


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color=None if mode != "RGB" else (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_options_defaults_caps_and_errors():
    assert handling.parse_options({}, 0) == handling.Options(max_side=0, format="png", quality=92)
    assert handling.parse_options({"max_side": "512", "format": "JPEG", "quality": "80"}, 0) == handling.Options(
        512, "jpeg", 80
    )
    # the operator's serve.max_side caps what a request asks for, and applies when it asks for none
    assert handling.parse_options({"max_side": "4096"}, 1024).max_side == 1024
    assert handling.parse_options({}, 1024).max_side == 1024
    assert handling.parse_options({"max_side": "300"}, 1024).max_side == 300
    with pytest.raises(ApiError, match=r"max_side='big': expected an integer from 0 to 65536") as e:
        handling.parse_options({"max_side": "big"}, 0)
    assert e.value.status == 400
    with pytest.raises(ApiError, match=r"format='gif': expected one of jpeg, png, webp"):
        handling.parse_options({"format": "gif"}, 0)
    with pytest.raises(ApiError, match=r"quality=0: expected an integer from 1 to 100"):
        handling.parse_options({"quality": "0"}, 0)


def test_upload_size_limit_names_the_sizes():
    handling.check_size(100, 100)
    with pytest.raises(ApiError, match=r"upload of 101 bytes is over the limit of 100 bytes") as e:
        handling.check_size(101, 100)
    assert e.value.status == 413 and "serve.max_upload_mib" in e.value.message


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, "empty upload"),
        (b"%PDF-1.4 not an image at all", 415, "not an image file"),
        (_png(40, 30)[:60], 422, "damaged or truncated"),
        (_png(300, 200), 413, "300x200 = 60000 pixels, over the limit of 50000"),
    ],
    ids=["empty", "not-an-image", "truncated", "too-many-pixels"],
)
def test_bad_uploads_are_4xx_with_one_line(data, status, words):
    with pytest.raises(ApiError) as e:
        handling.decode_upload(data, "photo.png", max_pixels=50_000)
    assert e.value.status == status
    assert words in e.value.message and "photo.png" in e.value.message
    assert "\n" not in e.value.message


def test_decoding_converts_modes_and_keeps_the_size():
    for mode in ("L", "RGBA", "P", "I;16"):
        img = handling.decode_upload(_png(33, 17, mode), "x.png", max_pixels=10_000)
        assert img.mode == "RGB" and img.size == (33, 17)


def test_downscale_and_restore_size_round_trip():
    img = Image.new("RGB", (1000, 500))
    small = handling.downscale(img, 256)
    assert small.size == (256, 128)
    assert handling.downscale(img, 0) is img and handling.downscale(img, 2000) is img
    restored = handling.restore_size(np.zeros((128, 256, 3), np.uint8), (1000, 500))
    assert restored.size == (1000, 500)


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_encode_formats(fmt, magic):
    options = handling.parse_options({"format": fmt}, 0)
    body, media = handling.encode(Image.new("RGB", (20, 10), (200, 30, 30)), options)
    assert body.startswith(magic) and media == f"image/{fmt}"
    assert Image.open(io.BytesIO(body)).size == (20, 10)
    assert handling.result_name("dir/My photo.JPG", options) == f"My_photo_anime.{handling.FORMATS[fmt][2]}"


def test_model_info_summarises_the_training_config():
    config = {"run": {"name": "style-a"}, "translator": {"lambda_style": 0.05, "lr": 2e-4}, "data": {}}
    info = handling.model_info("/runs/style-a/generator.pt", {"ngf": 64, "n_blocks": 9}, config)
    assert info["checkpoint"] == "style-a/generator.pt"
    assert info["architecture"] == {"name": "ResnetGenerator", "ngf": 64, "n_blocks": 9}
    assert info["training"] == {"run.name": "style-a", "translator.lambda_style": 0.05}
    released = handling.model_info("Shinkai_net_G.pth", {"ngf": 64, "n_blocks": 9}, None)
    assert released["training"] == {} and "authors" in released["source"]


def test_serve_config_overrides_and_checks():
    from scenimefy.serve.app import serve_config

    cfg = serve_config({"max_batch_size": "16", "port": 9000})
    assert (cfg.max_batch_size, cfg.port, cfg.host) == (16, 9000, "127.0.0.1")
    assert serve_config(base=ServeConfig(port=1234)).port == 1234
    with pytest.raises(ConfigError, match="serve option 'batch' is unknown"):
        serve_config({"batch": 4})
    with pytest.raises(ConfigError, match=r"serve.max_batch_size=0"):
        serve_config({"max_batch_size": 0})
    with pytest.raises(ConfigError, match="min_replicas <= max_replicas"):
        serve_config({"replicas": 0, "min_replicas": 5, "max_replicas": 2})


def test_serve_command_line_maps_to_the_serve_section():
    from scenimefy.commands.cli import build_parser
    from scenimefy.commands.serve import settings

    p = build_parser("serve")
    args = p.parse_intermixed_args(
        [
            "--checkpoint",
            "G.pt",
            "--port",
            "8123",
            "--autoscale",
            "1:3",
            "--device",
            "cpu",
            "--set",
            "serve.max_side=512",
        ]
    )
    cfg = settings(args)
    assert (cfg.port, cfg.replicas, cfg.min_replicas, cfg.max_replicas, cfg.device, cfg.max_side) == (
        8123,
        0,
        1,
        3,
        "cpu",
        512,
    )
    assert settings(p.parse_intermixed_args(["--checkpoint", "G.pt", "--replicas", "2"])).replicas == 2
    with pytest.raises(ValueError, match="expected MIN:MAX"):
        p.parse_intermixed_args(["--checkpoint", "G.pt", "--autoscale", "4"])


def test_serve_command_refuses_a_wrong_checkpoint_in_one_line(tmp_path, capsys):
    from scenimefy.commands.cli import main

    bad = tmp_path / "G.pt"
    bad.write_text("not weights")
    assert main(["serve", "--checkpoint", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scenimefy serve: error:")
    assert "G.pt is not a checkpoint: it is not a PyTorch weights file" in err
    assert len(err.splitlines()) == 1


def test_videos_are_recognised_by_their_first_bytes():
    mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"
    assert handling.video_container(mp4, "upload") == ".mp4"
    assert handling.video_container(mp4, "clip.MOV") == ".mov"
    assert handling.video_container(b"\x00\x00\x00\x14ftypqt  ", "x") == ".mov"
    assert handling.video_container(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "x") == ".webm"
    assert handling.video_container(b"\x1a\x45\xdf\xa3\xa3\x42\x82\x88matroska", "x") == ".mkv"
    # HEIC and AVIF photos are ISO files too, and images
    assert handling.video_container(b"\x00\x00\x00\x18ftypheic", "IMG_1.HEIC") is None
    assert handling.video_container(b"\x00\x00\x00\x1cftypavif", "a") is None
    assert handling.video_container(_png(4, 4), "a.png", "image/png") is None
    # a name or media type alone: checked by the probe (415 when it is no video)
    assert handling.video_container(b"junk", "a.webm") == ".webm"
    assert handling.video_container(b"junk", "upload", "video/quicktime; codecs=x") == ".mov"
    assert handling.video_result_name("dir/My clip.MOV", ".mov") == "My_clip_anime.mov"


def test_check_video_names_the_problem(tmp_path):
    av = pytest.importorskip("av")
    from fractions import Fraction

    path = tmp_path / "c.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    data = path.read_bytes()
    plan = handling.check_video(data, "c.mp4", max_side=0, max_pixels=64 * 48 * 5)
    assert (plan.width, plan.height, plan.frames, plan.max_frames, plan.rotation) == (64, 48, 5, 5, 0)
    assert handling.check_video(data, "c.mp4", max_side=32, max_pixels=32 * 24 * 6).max_frames == 6
    cases = [
        (dict(max_pixels=64 * 48 * 4), 413, "5 frames of 64x48 = 15360 pixels, over the limit of 12288"),
        (dict(max_pixels=100), 413, "5 frames of 64x48 = 15360 pixels, over the limit of 100;"),
        (dict(max_side=6), 422, "frames of 6x4 are too small"),
    ]
    for kwargs, status, words in cases:
        with pytest.raises(ApiError) as e:
            handling.check_video(data, "c.mp4", **{"max_side": 0, "max_pixels": 10**9, **kwargs})
        assert e.value.status == status and words in e.value.message and "\n" not in e.value.message
    for bad, status, words in [
        (data[: len(data) // 2], 422, "damaged or truncated"),
        (b"not a video at all" * 10, 415, "not a readable video"),
    ]:
        with pytest.raises(ApiError) as e:
            handling.check_video(bad, "c.mp4", max_side=0, max_pixels=10**9)
        assert e.value.status == status and words in e.value.message and "c.mp4" in e.value.message
