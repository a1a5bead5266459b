"""Export: ONNX (checked, dynamic size, run in onnxruntime against PyTorch on real photos),
safetensors (no pickle, read by translate), TorchScript; `translate --backend onnxruntime`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from shared_photos import PHOTOS

from scenimefy.commands.cli import main
from scenimefy.data.decode import load_image
from scenimefy.data.images import from_uint8
from scenimefy.inference.backends import OnnxRuntimeGenerator, load_backend
from scenimefy.inference.export import (
    EXPORT_FORMAT,
    export_generator,
    load_safetensors_generator,
    read_safetensors_metadata,
)
from scenimefy.inference.translate import load_translator, save_translator_snapshot, translate_batch
from scenimefy.models.translator import ResnetGenerator, init_weights

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
needs_photos = pytest.mark.skipif(not (PHOTOS / "hf_1.png").is_file(), reason="shared photos not available")

# ONNX Runtime's kernels differ from PyTorch's in summation order only: fp32 outputs in [-1, 1]
# agree to well under one uint8 level (1/127.5 = 0.0078).
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2


def _generator(seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf=8, n_blocks=1), gain=0.3).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A snapshot and its fp32 / fp16 ONNX exports (exporting takes seconds: done once)."""
    d = tmp_path_factory.mktemp("export")
    g = _generator()
    snapshot = save_translator_snapshot(d / "generator.pt", g, {})
    assert main(["export", "--checkpoint", snapshot, "--format", "onnx", "--out", str(d / "g.onnx")]) == 0
    half = export_generator(g, d / "g16.onnx", fmt="onnx", precision="fp16")
    return {"dir": d, "generator": g, "snapshot": snapshot, "onnx": d / "g.onnx", "onnx16": half.path}


def _photos() -> list[torch.Tensor]:
    """Two real photos at two sizes: hf_1 at its 510x339 and ag_1 downscaled to 320x213."""
    small = from_uint8(np.array(load_image(PHOTOS / "hf_1.png")))[0]
    big = load_image(PHOTOS / "ag_1.jpg")
    big = from_uint8(np.array(big.resize((320, round(320 * big.height / big.width)), Image.BICUBIC)))[0]
    return [small, big]


def test_onnx_is_valid_with_dynamic_size_and_metadata(exported):
    model = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "image" and dims[1].dim_value == 3
    assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))  # batch, height, width
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == EXPORT_FORMAT and json.loads(meta["arch"]) == {"ngf": 8, "n_blocks": 1}


@needs_photos
def test_onnxruntime_matches_pytorch_on_real_photos_at_two_sizes(exported):
    g = exported["generator"]
    ort_fp32 = OnnxRuntimeGenerator(exported["onnx"])
    ort_fp16 = OnnxRuntimeGenerator(exported["onnx16"])
    assert ort_fp16.input_dtype == np.float16 and ort_fp32.ngf == 8
    for x in _photos():
        expected = translate_batch(g, [x])[0]
        got = translate_batch(ort_fp32, [x])[0]
        assert got.shape == x.shape
        assert (got - expected).abs().max() < FP32_TOLERANCE
        assert (translate_batch(ort_fp16, [x])[0] - expected).abs().max() < FP16_TOLERANCE
        assert expected.std() > 0.05  # a real picture, not a flat output


@needs_photos
def test_translate_with_the_onnxruntime_backend(exported, tmp_path, capsys):
    photo = PHOTOS / "hf_8.png"
    out = tmp_path / "o"
    code = main(["translate", "--backend", "onnxruntime", "--checkpoint", str(exported["onnx"]), "--out", str(out)])
    assert code == 2  # no inputs: a usage error
    capsys.readouterr()
    args = ["--checkpoint", str(exported["onnx"]), "--out", str(out), str(photo)]
    assert main(["translate", "--backend", "onnxruntime", *args]) == 0
    assert main(["translate", "--checkpoint", exported["snapshot"], "--out", str(tmp_path / "t"), str(photo)]) == 0
    a = np.asarray(Image.open(out / "hf_8.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "t" / "hf_8.png"), dtype=int)
    assert a.shape == b.shape == (288, 510, 3) and np.abs(a - b).max() <= 1  # rounding at most
    capsys.readouterr()
    assert main(["translate", "--checkpoint", str(exported["onnx"]), "--out", str(out), str(photo)]) == 2
    assert "--backend onnxruntime" in capsys.readouterr().err
    args = ["--backend", "onnxruntime", "--checkpoint", exported["snapshot"], "--out", str(out), str(photo)]
    assert main(["translate", *args]) == 2
    assert "scenimefy export" in capsys.readouterr().err


def test_onnxruntime_backend_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="onnxruntime cannot load it") as e:
        load_backend(bad, "onnxruntime")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no such file"):
        OnnxRuntimeGenerator(tmp_path / "none.onnx")
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        load_backend(tmp_path / "g.pt", "tensorrt")


@needs_photos
def test_safetensors_round_trip_without_pickle(tmp_path, capsys):
    g = _generator(seed=1)
    snapshot = save_translator_snapshot(tmp_path / "g.pt", g, {})
    out = tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", snapshot, "--format", "safetensors", "--out", str(out)]) == 0
    assert "max abs difference to PyTorch on a check image: 0" in capsys.readouterr().out
    meta = read_safetensors_metadata(out)
    assert meta["format"] == EXPORT_FORMAT and json.loads(meta["arch"]) == {"ngf": 8, "n_blocks": 1}
    assert meta["precision"] == "fp32"
    assert b"\x80\x02" not in out.read_bytes()[:8]  # a JSON header, not a pickle
    loaded = load_translator(out)
    x = _photos()[0]
    assert torch.equal(translate_batch(loaded, [x])[0], translate_batch(g, [x])[0])
    assert main(["translate", "--checkpoint", str(out), "--out", str(tmp_path / "o"), str(PHOTOS / "hf_8.png")]) == 0
    half = export_generator(g, tmp_path / "h.safetensors", fmt="safetensors", precision="fp16")
    assert half.bytes < 0.6 * os.path.getsize(out)
    assert (translate_batch(load_translator(half.path), [x])[0] - translate_batch(g, [x])[0]).abs().max() < 2e-2


def test_safetensors_from_elsewhere_is_a_one_line_error(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a scenimefy generator export"):
        load_safetensors_generator(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_translator(broken)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_runs_at_other_sizes(tmp_path):
    g = _generator(seed=2)
    report = export_generator(g, tmp_path / "g.ts.pt", fmt="torchscript")
    assert report.max_abs_diff == 0.0
    module = torch.jit.load(report.path)
    x = torch.rand(2, 3, 44, 72) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(module(x), g(x), atol=1e-6, rtol=0)
    extra = {"scenimefy.json": ""}
    torch.jit.load(report.path, _extra_files=extra)
    assert json.loads(extra["scenimefy.json"])["format"] == EXPORT_FORMAT


def test_export_usage_errors(tmp_path, capsys):
    g = save_translator_snapshot(tmp_path / "g.pt", _generator(), {})
    assert main(["export", "--checkpoint", g, "--format", "onnx", "--out", str(tmp_path / "g.bin")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx", "--out", "x.onnx"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["export", "--checkpoint", g, "--format", "tflite", "--out", "x"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not os.path.exists("x.onnx")
