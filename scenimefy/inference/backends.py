"""Inference backends: the PyTorch generator, or an exported ONNX model run by onnxruntime.

Both are `torch.nn.Module`s mapping a padded (B, 3, H, W) image in [-1, 1] to its translation,
so `translate_batch`, `translate_paths` and `translate_video` take either. The onnxruntime one
runs on the CPU execution provider, or CUDA's where onnxruntime-gpu is installed. It has no
instance-norm modules: a video is translated frame by frame and tiles get their own statistics.

No Ray and no MLflow here.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor

BACKENDS = ("torch", "onnxruntime")


class OnnxRuntimeGenerator(torch.nn.Module):
    """An exported generator (`scenimefy export --format onnx`) in an onnxruntime session.

    `forward` takes and returns float32 tensors on any device (the session's input dtype,
    fp16 or fp32, is converted to); the single parameter only tells callers which device
    results should go to. `ngf` comes from the model's metadata (used by `MemoryPlan`).
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", threads: int = 0):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("--backend onnxruntime needs onnxruntime: pip install 'scenimefy[export]'") from None

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file (an ONNX model from `scenimefy export --format onnx`)")
        device = torch.device(device)
        available = ort.get_available_providers()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise ValueError(
                    f"onnxruntime here has no CUDA provider (it has {', '.join(available)}); "
                    "install onnxruntime-gpu or use --device cpu"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        # onnxruntime's CPU arena keeps the buffers of every image size it has seen: 3.2x
        # PyTorch's peak at 1024 px (BENCHMARKS.md); without it a pass is slightly slower
        options.enable_cpu_mem_arena = False
        if threads > 0:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as e:  # not an ONNX file, truncated, unsupported operators
            line = " ".join(str(e).split())
            raise ValueError(f"{path}: onnxruntime cannot load it ({line[:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{path}: expected one (B, 3, H, W) input, the model has {[i.shape for i in inputs]}")
        self.input_name = inputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        try:
            self.arch = json.loads(meta.get("arch", "{}"))
        except ValueError:
            self.arch = {}
        self.ngf = int(self.arch.get("ngf", 64))
        self.path = path
        self.providers = self.session.get_providers()
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        feed = x.detach().to("cpu", torch.float32).numpy().astype(self.input_dtype, copy=False)
        (y,) = self.session.run(None, {self.input_name: feed})
        return torch.from_numpy(np.asarray(y, dtype=np.float32)).to(x.device)


def load_backend(
    checkpoint: str | os.PathLike, backend: str = "torch", device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """The generator `translate` runs: `load_translator(checkpoint)` for "torch", an
    `OnnxRuntimeGenerator` for "onnxruntime" (checkpoint: an exported .onnx file)."""
    checkpoint = os.fspath(checkpoint)
    is_onnx = checkpoint.lower().endswith(".onnx")
    if backend == "onnxruntime":
        if not is_onnx:
            raise ValueError(
                f"{checkpoint}: --backend onnxruntime runs an .onnx model; "
                f"make one with `scenimefy export --checkpoint {checkpoint} --format onnx --out G.onnx`"
            )
        return OnnxRuntimeGenerator(checkpoint, device).eval()
    if backend != "torch":
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if is_onnx:
        raise ValueError(f"{checkpoint}: an ONNX model runs with --backend onnxruntime")
    from scenimefy.inference.translate import load_translator

    return load_translator(checkpoint, device)
