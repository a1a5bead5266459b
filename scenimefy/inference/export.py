"""Export the translator generator for deployment outside this package: ONNX, safetensors, TorchScript.

- ONNX: the generator's network on a padded image, input `image` (B, 3, H, W) RGB in [-1, 1] with
  dynamic batch, height and width (H and W multiples of 4, >= 8: pad and crop as
  `translate_batch` does), output `anime` of the same shape in [-1, 1]; checked with
  `onnx.checker`, architecture in the model's metadata. Runs in onnxruntime
  (scenimefy.inference.backends) and other ONNX runtimes (TensorRT, mobile runtimes).
- safetensors: the generator's state dict, no pickle, with the architecture in the header's
  metadata; `load_translator` (so `translate`) reads it.
- TorchScript: the traced network (any size multiple of 4), for libtorch.

`--precision fp16` stores half-precision weights (ONNX and TorchScript then take and return fp16).
No Ray and no MLflow here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass

import torch

from scenimefy.data.images import atomic_path
from scenimefy.models.translator import ResnetGenerator, load_generator_state

FORMATS = ("onnx", "safetensors", "torchscript")
PRECISIONS = ("fp32", "fp16")
EXTENSIONS = {"onnx": ".onnx", "safetensors": ".safetensors", "torchscript": ".pt"}
EXPORT_FORMAT = "scenimefy.translator.generator"  # metadata "format" of every exported file
INPUT_NAME, OUTPUT_NAME = "image", "anime"
# The opset the ONNX exporter targets; onnxruntime >= 1.17 runs it.
ONNX_OPSET = 18
# Largest difference to the PyTorch generator the export check accepts (outputs in [-1, 1]).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


@dataclass
class ExportReport:
    path: str
    format: str
    precision: str
    arch: dict[str, int]
    bytes: int
    max_abs_diff: float | None  # exported model vs the PyTorch generator on a check image (None: not run)


def _metadata(generator: ResnetGenerator, precision: str) -> dict[str, str]:
    return {
        "format": EXPORT_FORMAT,
        "arch": json.dumps(generator.arch),
        "precision": precision,
        "input": f"{INPUT_NAME}: (B, 3, H, W) RGB in [-1, 1], H and W multiples of 4 and >= 8",
        "output": f"{OUTPUT_NAME}: (B, 3, H, W) RGB in [-1, 1]",
    }


def _check_image(dtype: torch.dtype) -> torch.Tensor:
    """A fixed (1, 3, 64, 96) check image: smooth gradients plus texture, in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 96), indexing="ij")
    base = torch.stack([xx, yy, xx * yy])[None]
    return (0.7 * base + 0.3 * torch.rand(1, 3, 64, 96, generator=g) * 2 - 0.3).clamp(-1, 1).to(dtype)


def export_generator(
    generator: ResnetGenerator, out: str | os.PathLike, *, fmt: str, precision: str = "fp32", check: bool = True
) -> ExportReport:
    """Write `generator` to `out` (atomically) as `fmt`; with `check`, run the exported model on
    a check image and compare with the PyTorch generator (ValueError above `TOLERANCE`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not isinstance(generator, ResnetGenerator):
        raise ValueError(f"export expects a ResnetGenerator, got {type(generator).__name__}")
    out = os.fspath(out)
    if not out.lower().endswith(EXTENSIONS[fmt]) and fmt != "torchscript":
        raise ValueError(f"{out}: a {fmt} file must end in {EXTENSIONS[fmt]}")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    reference = generator.to("cpu").eval().float()
    model = ResnetGenerator(**reference.arch)
    model.load_state_dict(reference.state_dict())
    model = model.to(dtype).eval()
    {"onnx": _write_onnx, "safetensors": _write_safetensors, "torchscript": _write_torchscript}[fmt](
        model, out, precision
    )
    diff = None
    if check:
        x = _check_image(torch.float32)
        with torch.inference_mode():
            expected = reference(x)
        got = _run_exported(out, fmt, x)
        diff = float((got - expected).abs().max())
        if diff > TOLERANCE[precision]:
            raise ValueError(
                f"{out}: the exported model differs from the PyTorch generator by {diff:.3g} "
                f"(tolerance {TOLERANCE[precision]:g} at {precision})"
            )
    return ExportReport(out, fmt, precision, dict(reference.arch), os.path.getsize(out), diff)


def _write_onnx(model: ResnetGenerator, out: str, precision: str) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter builds the graph with it)
    except ImportError as e:
        raise ValueError(f"--format onnx needs {e.name}: pip install 'scenimefy[export]'") from None

    dtype = next(model.parameters()).dtype
    x = _check_image(dtype)
    batch = torch.export.Dim("batch", min=1, max=4096)
    h4, w4 = torch.export.Dim("height_div4", min=2, max=8192), torch.export.Dim("width_div4", min=2, max=8192)
    # the exporter reports its steps on stdout; the command prints its own summary
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.model,  # the network itself: the size check of `forward` is the caller's padding
            (x,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 2: 4 * h4, 3: 4 * w4},),
            opset_version=ONNX_OPSET,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    for key, value in _metadata(model, precision).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "scenimefy"
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, tmp)


def _write_safetensors(model: ResnetGenerator, out: str, precision: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, tmp, metadata=_metadata(model, precision))


def _write_torchscript(model: ResnetGenerator, out: str, precision: str) -> None:
    x = _check_image(next(model.parameters()).dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; libtorch still reads it
        traced = torch.jit.trace(model.model, x)
        with atomic_path(out) as tmp:
            torch.jit.save(traced, tmp, _extra_files={"scenimefy.json": json.dumps(_metadata(model, precision))})


def _run_exported(path: str, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The exported file's output on `x` (float32 in and out)."""
    if fmt == "onnx":
        from scenimefy.inference.backends import OnnxRuntimeGenerator

        with torch.inference_mode():
            return OnnxRuntimeGenerator(path, "cpu")(x)
    if fmt == "safetensors":
        with torch.inference_mode():
            return load_safetensors_generator(path)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(path, map_location="cpu")
    dtype = next(module.parameters()).dtype
    with torch.inference_mode():
        return module(x.to(dtype)).float()


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # not a safetensors file, truncated header
        raise ValueError(
            f"{os.fspath(path)}: not a readable safetensors file ({' '.join(str(e).split())[:160]})"
        ) from None


def load_safetensors_generator(path: str | os.PathLike) -> ResnetGenerator:
    """A generator (fp32, CPU, eval) from a safetensors file written by `export_generator`; the
    architecture comes from the header's metadata. One-line ValueError for anything else."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    meta = read_safetensors_metadata(path)
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{path}: not a scenimefy generator export (metadata format {meta.get('format')!r}, "
            f"expected {EXPORT_FORMAT!r}); write one with `scenimefy export --format safetensors`"
        )
    try:
        arch = json.loads(meta["arch"])
        generator = ResnetGenerator(ngf=int(arch["ngf"]), n_blocks=int(arch["n_blocks"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid architecture metadata {meta.get('arch')!r} ({e})") from None
    state = {k: v.float() for k, v in load_file(path, device="cpu").items()}
    try:
        load_generator_state(generator, state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return generator.eval()
