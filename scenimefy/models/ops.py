"""StyleGAN2's custom ops in pure PyTorch (docs/deviations.md, "Nothing compiles at import").

rosinality's implementation builds two CUDA extensions at import time (fused bias + leaky
ReLU, and ``upfirdn2d``). Both are plain compositions of standard ops, written out here so
everything runs on CPU and GPU alike, with derivatives of any order (R1 and path-length
regularisation differentiate through them twice). Nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def make_kernel(taps: Sequence[float] | Tensor) -> Tensor:
    """A normalised 2-D FIR kernel: the outer product of 1-D ``taps`` (or a 2-D kernel), summing to 1.

    ``make_kernel([1, 3, 3, 1])`` is the (4, 4) binomial blur used throughout StyleGAN2.
    """
    kernel = torch.as_tensor(taps, dtype=torch.float32)
    if kernel.ndim == 1:
        kernel = kernel[None, :] * kernel[:, None]
    if kernel.ndim != 2:
        raise ValueError(f"make_kernel expects 1-D taps or a 2-D kernel, got shape {tuple(kernel.shape)}")
    return kernel / kernel.sum()


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return int(value[0]), int(value[1])


def upfirdn2d(
    x: Tensor,
    kernel: Tensor,
    up: int | Sequence[int] = 1,
    down: int | Sequence[int] = 1,
    pad: Sequence[int] = (0, 0),
) -> Tensor:
    """Upsample, FIR-filter and downsample every channel of ``x`` independently.

    ``x``: (B, C, H, W); ``kernel``: (kh, kw). ``up`` / ``down`` are ints (both axes) or
    (x, y) pairs. ``pad`` is ``(p0, p1)`` for both axes, or ``(x0, x1, y0, y1)`` as in
    rosinality. Steps, per channel:

    1. zero-insertion upsampling: every sample is followed by ``up - 1`` zeros;
    2. pad ``p0`` before and ``p1`` after (a negative amount crops);
    3. valid 2-D convolution with ``kernel`` (a true convolution: the kernel is flipped);
    4. keep every ``down``-th sample, starting at index 0.

    Output size per axis: ``floor((H * up + p0 + p1 - kh) / down) + 1``.

    Gradients: the op is linear in ``x`` and its adjoint is again an ``upfirdn2d`` (up and
    down swapped, kernel flipped, pads adjusted), so the backward pass calls this same op and
    derivatives of any order cost one depthwise convolution each. (Autograd's own double
    backward of a depthwise convolution is ~100x slower on GPU and would dominate R1 and the
    path-length penalty.) A ``kernel`` that requires grad takes the plain autograd path.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects (B, C, H, W) input, got shape {tuple(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a (kh, kw) kernel, got shape {tuple(kernel.shape)}")
    up_x, up_y = _pair(up, "up")
    down_x, down_y = _pair(down, "down")
    if len(pad) == 2:
        pads = (int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1]))
    elif len(pad) == 4:
        pads = tuple(int(p) for p in pad)
    else:
        raise ValueError(f"pad must have 2 or 4 entries, got {pad!r}")
    if min(up_x, up_y, down_x, down_y) < 1:
        raise ValueError(f"up and down must be >= 1, got up={up!r}, down={down!r}")
    out_h, out_w = _output_size(x.shape, kernel.shape, (up_x, up_y), (down_x, down_y), pads)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d output would be empty ({out_h}x{out_w}) for input {tuple(x.shape)}")
    if kernel.requires_grad:
        return _upfirdn2d_composite(x, kernel, (up_x, up_y), (down_x, down_y), pads)
    return _UpFirDn2d.apply(x, kernel, (up_x, up_y), (down_x, down_y), pads)


def _output_size(x_shape, kernel_shape, up, down, pads) -> tuple[int, int]:
    (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = up, down, pads
    out_h = (x_shape[2] * up_y + pad_y0 + pad_y1 - kernel_shape[0]) // down_y + 1
    out_w = (x_shape[3] * up_x + pad_x0 + pad_x1 - kernel_shape[1]) // down_x + 1
    return out_h, out_w


def _upfirdn2d_composite(
    x: Tensor, kernel: Tensor, up: tuple[int, int], down: tuple[int, int], pads: tuple[int, int, int, int]
) -> Tensor:
    """The four steps with standard ops: reshapes, ``F.pad`` and a depthwise ``conv2d``."""
    (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = up, down, pads
    batch, channels, height, width = x.shape
    kernel_h, kernel_w = kernel.shape
    out = x

    # 1. zero insertion: (B, C, H, 1, W, 1) padded with up-1 zeros after each sample
    if up_x > 1 or up_y > 1:
        out = out.reshape(batch, channels, height, 1, width, 1)
        out = F.pad(out, (0, up_x - 1, 0, 0, 0, up_y - 1))
        out = out.reshape(batch, channels, height * up_y, width * up_x)

    # 2. pad (positive part) then crop (negative part)
    out = F.pad(out, (max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)))
    out = out[
        :,
        :,
        max(-pad_y0, 0) : out.shape[2] - max(-pad_y1, 0),
        max(-pad_x0, 0) : out.shape[3] - max(-pad_x1, 0),
    ]

    # 3 + 4. depthwise conv (one group per channel); conv2d is a correlation, so flip the kernel
    # for a true convolution; the stride keeps samples 0, down, 2 down, ...
    weight = torch.flip(kernel, [0, 1]).to(dtype=out.dtype, device=out.device)
    weight = weight.reshape(1, 1, kernel_h, kernel_w).expand(channels, 1, kernel_h, kernel_w)
    return F.conv2d(out, weight, stride=(down_y, down_x), groups=channels)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d with an explicit adjoint as backward (see :func:`upfirdn2d`)."""

    @staticmethod
    def forward(ctx, x, kernel, up, down, pads):
        ctx.save_for_backward(kernel)
        ctx.config = (tuple(x.shape), up, down, pads)
        return _upfirdn2d_composite(x, kernel, up, down, pads)

    @staticmethod
    def backward(ctx, grad_out):
        (kernel,) = ctx.saved_tensors
        x_shape, (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = ctx.config
        kernel_h, kernel_w = kernel.shape
        out_h, out_w = grad_out.shape[2], grad_out.shape[3]
        # adjoint: zero-insert by `down`, pad so that the valid convolution with the flipped
        # kernel lands on the upsampled input grid, then keep every `up`-th sample
        pads = (
            kernel_w - pad_x0 - 1,
            x_shape[3] * up_x - out_w * down_x + pad_x0 - up_x + 1,
            kernel_h - pad_y0 - 1,
            x_shape[2] * up_y - out_h * down_y + pad_y0 - up_y + 1,
        )
        grad_x = _UpFirDn2d.apply(grad_out, torch.flip(kernel, [0, 1]), (down_x, down_y), (up_x, up_y), pads)
        assert grad_x.shape == x_shape, (grad_x.shape, x_shape)
        return grad_x, None, None, None, None


def fused_leaky_relu(
    x: Tensor,
    bias: Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = 2**0.5,
) -> Tensor:
    """``scale * leaky_relu(x + bias, negative_slope)`` with ``bias`` (C,) added along dim 1.

    The sqrt(2) gain keeps the activations' second moment roughly unchanged (StyleGAN2).
    """
    if bias is not None:
        shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
        x = x + bias.reshape(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale
