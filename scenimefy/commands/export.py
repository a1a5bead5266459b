"""Export a trained generator for deployment: ONNX (dynamic size), safetensors or TorchScript.

    scenimefy export --checkpoint runs/my-run/generator.pt --format onnx --out G.onnx
    scenimefy export --checkpoint Shinkai_net_G.pth --format safetensors --out G.safetensors --precision fp16
    scenimefy translate --checkpoint G.onnx --backend onnxruntime --out anime/ photos/

The ONNX model takes `image` (B, 3, H, W) RGB in [-1, 1], H and W multiples of 4 (pad, then crop
back), and returns `anime`, the same shape in [-1, 1]; it is checked with onnx.checker. A
safetensors file holds the weights and the architecture (no pickle); `translate` reads it.
Every export is run once against the PyTorch generator and the largest difference printed.
"""

from __future__ import annotations

import argparse

HELP = "export a trained generator as ONNX, safetensors or TorchScript"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="our generator.pt / checkpoint dir, Shinkai_net_G.pth, or an exported .safetensors",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["onnx", "safetensors", "torchscript"],
        dest="fmt",
        help="onnx (dynamic height/width), safetensors (weights + architecture) or torchscript",
    )
    p.add_argument("--out", required=True, help="the file to write (.onnx, .safetensors; TorchScript: any name)")
    p.add_argument(
        "--precision", choices=["fp32", "fp16"], default="fp32", help="weight precision (default: %(default)s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scenimefy.inference.export import export_generator
    from scenimefy.inference.translate import load_translator

    generator = load_translator(args.checkpoint, "cpu")
    report = export_generator(generator, args.out, fmt=args.fmt, precision=args.precision)
    arch = ", ".join(f"{k}={v}" for k, v in report.arch.items())
    print(
        f"exported {args.checkpoint} ({arch}) as {report.format} {report.precision} to {report.path} "
        f"({report.bytes / 2**20:.1f} MiB); max abs difference to PyTorch on a check image: {report.max_abs_diff:.2g}"
    )
    return 0
