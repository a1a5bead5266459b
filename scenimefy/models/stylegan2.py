"""StyleGAN2 generator and ResNet discriminator (Karras et al. 2020), pure PyTorch.

Stage 0 trains this network on real scenes (G_s); Stage 1 fine-tunes a copy on anime (G_t).
Architecture, initialisation and module names follow rosinality/stylegan2-pytorch (docs/method.md,
"Stage 0") so that ``state_dict()`` keys and shapes equal those of its checkpoints, which the
authors' released generators use: weights load 1:1 with ``strict=True``.

Equalised learning rate: every layer stores unscaled weights ~ N(0, 1) (divided by ``lr_mul``)
and scales them at run time, so checkpoints hold the *stored* values.

Pieces are defined bottom-up: layers, then blocks, then the two networks, then the Stage-1
freezing helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenimefy.models.ops import fused_leaky_relu, make_kernel, upfirdn2d

# rosinality's channel table is ch(res) = min(CHANNEL_MAX, CHANNEL_BASE * channel_multiplier // res):
# {4..32: 512, 64: 256 cm, 128: 128 cm, 256: 64 cm, 512: 32 cm, 1024: 16 cm}
RO_CHANNEL_BASE = 16384
RO_CHANNEL_MAX = 512
RO_LR_MLP = 0.01  # learning-rate multiplier of the mapping network
BLUR_KERNEL = (1, 3, 3, 1)
SUPPORTED_SIZES = (32, 64, 128, 256, 512, 1024)


def channel_table(
    size: int,
    *,
    channel_multiplier: int,
    channel_base: int = RO_CHANNEL_BASE,
    channel_max: int = RO_CHANNEL_MAX,
) -> dict[int, int]:
    """Feature channels per resolution 4..size: ``min(channel_max, channel_base * cm // res)``.

    With the rosinality defaults this is its table; smaller ``channel_base`` / ``channel_max``
    give narrow networks for tests.
    """
    check_size(size)
    table = {}
    res = 4
    while res <= size:
        table[res] = min(channel_max, int(channel_base * channel_multiplier) // res)
        if table[res] < 1:
            raise ValueError(
                f"channel table is empty at {res} px (channel_base={channel_base}, "
                f"channel_multiplier={channel_multiplier}): increase channel_base"
            )
        res *= 2
    return table


def check_size(size: int) -> int:
    """The log2 of an image size StyleGAN2 supports (a power of two, 32..1024)."""
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"StyleGAN2 size must be one of {SUPPORTED_SIZES}, got {size}")
    return int(math.log2(size))


# ----------------------------------------------------------------------------------------
# Layers


class PixelNorm(nn.Module):
    """``z / sqrt(mean_c z^2 + 1e-8)``: the mapping network's input normalisation."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR low-pass ``upfirdn2d(x, kernel, pad)``; the kernel is scaled by ``factor^2`` when it
    follows a zero-inserting (transposed-conv) upsampling, to keep the signal's gain."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        kernel = make_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor**2
        self.register_buffer("kernel", kernel)  # persistent: a key of rosinality checkpoints
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling by zero insertion + FIR filter (the skip path of ToRGB)."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        kernel = make_kernel(taps) * factor**2
        self.register_buffer("kernel", kernel)
        p = kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)  # (2, 1) for [1, 3, 3, 1]: 2H out

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: stored weight ~ N(0, 1), used as ``w / sqrt(in k^2)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.weight.shape
        return f"{in_c}, {out_c}, {k}, stride={self.stride}, padding={self.padding}"


def standard_strides(grad: Tensor) -> Tensor:
    """`grad` with row-major strides (a copy only where a size-1 dimension has an unusual stride)."""
    expected = torch.empty(grad.shape, device="meta").stride()
    return grad if grad.stride() == expected else grad.clone(memory_format=torch.contiguous_format)


class EqualLinear(nn.Module):
    """Linear with equalised learning rate and a learning-rate multiplier.

    Stored weight (out, in) ~ N(0, 1) / lr_mul, used as ``w * lr_mul / sqrt(in)``; stored bias
    starts at ``bias_init`` and is used as ``b * lr_mul``. With ``activation=True`` the bias is
    added inside the fused leaky ReLU (x sqrt 2).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features).div_(lr_mul))
        if 1 in self.weight.shape:
            # A (1, n) weight's gradient from a double backward (the R1 penalty, docs/method.md) comes
            # with strides (1, 1); DDP's bucket expects (n, 1) and warns. Same values, standard strides.
            self.weight.register_hook(standard_strides)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"{in_f}, {out_f}, lr_mul={self.lr_mul}, activation={self.activation}"


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + leaky ReLU(0.2) x sqrt(2); the bias is this module's ``bias``."""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2 Eq. 1-3), optionally followed by 2x upsampling.

    Per sample b: ``W_b[o, i] = W[o, i] * s_b[i] / sqrt(in k^2)`` with ``s_b = A(w_b)`` (the
    ``modulation`` affine, bias initialised to 1), then demodulated
    ``W_b[o] /= sqrt(sum_{i,u,v} W_b[o, i, u, v]^2 + 1e-8)``. All samples run as one grouped
    convolution. Upsampling is a stride-2 transposed convolution (2H+1) followed by a blur with
    pad (1, 1) (2H).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        """``x`` (B, in, H, W), ``style`` (B, style_dim) -> (B, out, H', W')."""
        batch, in_channels, height, width = x.shape
        k = self.kernel_size
        s = self.modulation(style).reshape(batch, 1, in_channels, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)  # (B, out)
            weight = weight * demod.reshape(batch, self.out_channels, 1, 1, 1)

        x = x.reshape(1, batch * in_channels, height, width)  # one group per sample
        if self.upsample:
            # transposed conv wants (in, out, k, k) per group
            weight = weight.transpose(1, 2).reshape(batch * in_channels, self.out_channels, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.reshape(batch, self.out_channels, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channels, in_channels, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_channels, out.shape[2], out.shape[3])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, "
            f"demodulate={self.demodulate}, upsample={self.upsample}"
        )


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with one learned scalar strength (initialised to 0).

    ``noise`` (B or 1, 1, H, W); ``None`` draws fresh N(0, 1) noise per sample.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            batch, _, height, width = x.shape
            noise = x.new_empty(batch, 1, height, width).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned (1, C, 4, 4) constant the synthesis network starts from."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_size: int) -> Tensor:
        return self.input.expand(batch_size, -1, -1, -1)


# ----------------------------------------------------------------------------------------
# Generator blocks


class StyledConv(nn.Module):
    """``sqrt(2) * lrelu(modconv(x, w) + n * noise + b)``: one synthesis layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        demodulate: bool = True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim,
            demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel,
        )  # fmt: skip
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + bias, added to the upsampled skip image."""

    def __init__(
        self, in_channels: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = BLUR_KERNEL
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class NoiseBuffers(nn.Module):
    """Holds the fixed per-layer noise maps ``noise_0 .. noise_{L-1}`` (used with
    ``randomize_noise=False``); a plain module so the keys read ``noises.noise_j``."""


# ----------------------------------------------------------------------------------------
# Generator


class Generator(nn.Module):
    """StyleGAN2 generator: mapping network ``style`` (z -> w) and synthesis network.

    ``size`` in 32..1024. At 256 px / channel_multiplier 2 it has 30,034,338 parameters and
    135 state-dict entries, with rosinality's names. Layer l of the synthesis network reads
    latent ``l``; ToRGB of a block shares its latent with the next block's first conv; there
    are ``n_latent = 2 log2(size) - 2`` latents and ``num_layers = 2 log2(size) - 3`` noise maps.
    """

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        *,
        channel_multiplier: int,
        channel_base: int = RO_CHANNEL_BASE,
        channel_max: int = RO_CHANNEL_MAX,
        lr_mlp: float = RO_LR_MLP,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        self.log_size = check_size(size)
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.channel_base = channel_base
        self.channel_max = channel_max
        self.lr_mlp = lr_mlp
        self.channels = channel_table(
            size, channel_multiplier=channel_multiplier, channel_base=channel_base, channel_max=channel_max
        )
        self.num_layers = (self.log_size - 2) * 2 + 1  # noise maps / styled convs
        self.n_latent = self.log_size * 2 - 2  # per-layer latents (convs + final ToRGB)

        # mapping network: PixelNorm + n_mlp x (EqualLinear, lr_mul 0.01, lrelu x sqrt 2)
        layers: list[nn.Module] = [PixelNorm()]
        for _ in range(n_mlp):
            layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True))
        self.style = nn.Sequential(*layers)

        # 4 px block
        ch4 = self.channels[4]
        self.input = ConstantInput(ch4)
        self.conv1 = StyledConv(ch4, ch4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch4, style_dim, upsample=False)

        # fixed noise maps: layer j works at 2^((j + 5) // 2) px
        self.noises = NoiseBuffers()
        for j in range(self.num_layers):
            res = 2 ** ((j + 5) // 2)
            self.noises.register_buffer(f"noise_{j}", torch.randn(1, 1, res, res))

        # 8 .. size px blocks: convs.{2k} (upsampling), convs.{2k+1}, to_rgbs.{k}
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = ch4
        for i in range(3, self.log_size + 1):
            out_channels = self.channels[2**i]
            self.convs.append(
                StyledConv(in_channels, out_channels, 3, style_dim, upsample=True, blur_kernel=blur_kernel)
            )
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels

    def architecture(self) -> dict:
        """Constructor arguments as plain data (for snapshots and rebuilding)."""
        return {
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channel_multiplier": self.channel_multiplier,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "lr_mlp": self.lr_mlp,
        }

    def _device(self) -> torch.device:
        return self.input.input.device

    def make_noise(self, batch_size: int | None = None, *, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh per-layer noise maps ``[(B or 1, 1, r_j, r_j)]``, one per styled conv.

        Pass the same list to two generators (G_s and G_t in Stage 1) so they see the same
        noise. Drawn on ``generator``'s device (CPU if none) and moved to the model's device.
        """
        source = generator.device if generator is not None else torch.device("cpu")
        shape_b = 1 if batch_size is None else batch_size
        noises = []
        for j in range(self.num_layers):
            res = 2 ** ((j + 5) // 2)
            noises.append(torch.randn(shape_b, 1, res, res, generator=generator, device=source).to(self._device()))
        return noises

    def sample_mixing_styles(
        self, batch_size: int, *, mixing_prob: float, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], int | None]:
        """Random z's for one step with style mixing: ``([z1, z2], inject_index)`` with
        probability ``mixing_prob``, else ``([z], None)``; z (B, style_dim) ~ N(0, I).

        Drawing ``inject_index`` here (not inside ``forward``) lets two generators (G_s and G_t
        in Stage 1) mix at the same layer: pass both results to each of them.
        """
        source = generator.device if generator is not None else torch.device("cpu")
        mix = mixing_prob > 0 and torch.rand((), generator=generator, device=source).item() < mixing_prob
        n_styles = 2 if mix else 1
        zs = [
            torch.randn(batch_size, self.style_dim, generator=generator, device=source).to(self._device())
            for _ in range(n_styles)
        ]
        inject_index = None
        if mix:
            inject_index = int(torch.randint(1, self.n_latent, (), generator=generator, device=source).item())
        return zs, inject_index

    def get_latent(self, z: Tensor) -> Tensor:
        """The mapping network: z (B, style_dim) -> w (B, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Average w of ``n`` random z ~ N(0, I): the truncation centre, (1, style_dim)."""
        source = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(n, self.style_dim, generator=generator, device=source).to(self._device())
        return self.style(z).mean(0, keepdim=True)

    def forward(
        self,
        styles: Tensor | Sequence[Tensor],
        *,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = True,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        inject_index: int | None = None,
        return_latents: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Synthesize images; returns ``(image (B, 3, size, size), latents or None)``.

        ``styles``: one z (B, style_dim), or a list of one or two (style mixing); with
        ``input_is_latent`` they are w's instead, and a single (B, n_latent, style_dim) W+
        tensor is also accepted. Two styles: layers ``< inject_index`` read the first, the rest
        the second (``inject_index`` drawn from U{1..n_latent-1} if not given). ``truncation``
        psi < 1 moves every w towards ``truncation_latent``: ``w' = w_mean + psi (w - w_mean)``.
        ``noise``: a list of ``num_layers`` maps (entries may be None = fresh noise); if None,
        fresh noise when ``randomize_noise`` else the stored ``noises.noise_j``. With
        ``return_latents`` the broadcast (B, n_latent, style_dim) latents are returned (the
        tensor the path-length penalty differentiates against).
        """
        if isinstance(styles, Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"Generator takes one or two styles (style mixing), got {len(styles)}")
        if not input_is_latent:
            if any(s.ndim != 2 for s in styles):
                raise ValueError("z inputs must be (B, style_dim); pass W+ latents with input_is_latent=True")
            styles = [self.style(s) for s in styles]

        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{j}") for j in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise must have {self.num_layers} entries (one per styled conv), got {len(noise)}")

        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent(4096))")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        # broadcast to per-layer latents (B, n_latent, style_dim)
        if len(styles) == 1:
            latent = styles[0]
            if latent.ndim == 2:
                latent = latent.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()).item())
            if not 0 <= inject_index <= self.n_latent:
                raise ValueError(f"inject_index must be in 0..{self.n_latent}, got {inject_index}")
            first = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
            second = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
            latent = torch.cat([first, second], 1)
        if latent.shape[1] != self.n_latent:
            raise ValueError(f"W+ latents must have {self.n_latent} layers, got shape {tuple(latent.shape)}")

        # synthesis: conv1 reads latent 0, to_rgb1 latent 1; block k reads 2k+1, 2k+2, 2k+3
        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise_up, noise_same, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = conv_up(out, latent[:, i], noise=noise_up)
            out = conv(out, latent[:, i + 1], noise=noise_same)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        image = skip
        return (image, latent) if return_latents else (image, None)


# ----------------------------------------------------------------------------------------
# Discriminator


class ConvLayer(nn.Sequential):
    """[Blur ->] EqualConv2d [-> FusedLeakyReLU]; downsampling = blur + stride-2 conv.

    A Sequential so its keys read ``0.weight`` / ``1.bias`` (or ``0.kernel``, ``1.weight``,
    ``2.bias`` when downsampling) as in rosinality.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        conv_bias = bias and not activate  # with an activation the bias lives in FusedLeakyReLU
        layers.append(
            EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=conv_bias)
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)``, halving the resolution."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def minibatch_stddev(x: Tensor, group_size: int) -> Tensor:
    """Append the minibatch standard deviation as one extra channel: (B, C, H, W) -> (B, C+1, H, W).

    Samples are split into groups of ``G = min(B, group_size)`` (sample b is in sub-group
    ``b mod B/G``); per sub-group the std over its G members (biased variance + 1e-8), averaged
    over C, H, W, is tiled to each member.
    """
    batch, channels, height, width = x.shape
    group = min(batch, group_size)
    if batch % group:
        raise ValueError(
            f"discriminator batch {batch} is not divisible by the minibatch-stddev group {group}: "
            f"use a batch that is a multiple of {group_size} (or smaller than it)"
        )
    y = x.reshape(group, -1, 1, channels, height, width)  # (G, B/G, 1, C, H, W)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (B/G, 1, C, H, W)
    y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (B/G, 1, 1, 1)
    y = y.repeat(group, 1, height, width)  # (B, 1, H, W)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """StyleGAN2 ResNet discriminator: fromRGB, ResBlocks down to 4 px, minibatch stddev,
    3x3 conv, two linear layers -> one logit per image (B, 1).

    At 256 px / channel_multiplier 2: 28,864,129 parameters, 50 state-dict entries.
    """

    stddev_group = 4

    def __init__(
        self,
        size: int,
        *,
        channel_multiplier: int,
        channel_base: int = RO_CHANNEL_BASE,
        channel_max: int = RO_CHANNEL_MAX,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        log_size = check_size(size)
        self.size = size
        self.channel_multiplier = channel_multiplier
        self.channel_base = channel_base
        self.channel_max = channel_max
        channels = channel_table(
            size, channel_multiplier=channel_multiplier, channel_base=channel_base, channel_max=channel_max
        )
        self.channels = channels

        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]  # fromRGB
        in_channels = channels[size]
        for i in range(log_size, 2, -1):
            out_channels = channels[2 ** (i - 1)]
            convs.append(ResBlock(in_channels, out_channels, blur_kernel))
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)

        self.final_conv = ConvLayer(in_channels + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation=True),
            EqualLinear(channels[4], 1),
        )

    def architecture(self) -> dict:
        """Constructor arguments as plain data."""
        return {
            "size": self.size,
            "channel_multiplier": self.channel_multiplier,
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
        }

    def forward(self, image: Tensor) -> Tensor:
        """``image`` (B, 3, size, size) -> logits (B, 1)."""
        out = self.convs(image)
        out = minibatch_stddev(out, self.stddev_group)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(out.shape[0], -1))


# ----------------------------------------------------------------------------------------
# Stage 1: which generator blocks fine-tune (docs/method.md, "Stage 1")


def trainable_block_prefixes(size: int, n_trainable_blocks: int) -> list[str]:
    """Module prefixes of the last ``n_trainable_blocks`` resolution blocks of a ``size`` px G.

    A block is its two styled convs and its ToRGB (FreezeG / Cartoon-StyleGAN's rule). At
    256 px, N = 3 gives ``convs.6`` .. ``convs.11`` and ``to_rgbs.3`` .. ``to_rgbs.5`` (the 64,
    128 and 256 px blocks). Match them with :func:`matches_prefix` (exact module boundaries).
    """
    log_size = check_size(size)
    n_blocks = log_size - 2  # blocks after the 4 px one
    if not 0 <= n_trainable_blocks <= n_blocks:
        raise ValueError(
            f"n_trainable_blocks={n_trainable_blocks}: a {size} px generator has {n_blocks} "
            f"upsampling blocks (8..{size} px); choose 0..{n_blocks}"
        )
    first = n_blocks - n_trainable_blocks
    convs = [f"convs.{k}" for k in range(2 * first, 2 * n_blocks)]
    to_rgbs = [f"to_rgbs.{j}" for j in range(first, n_blocks)]
    return convs + to_rgbs


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """True if parameter ``name`` lies inside one of the modules ``prefixes`` (``convs.1`` does
    not match ``convs.10.…``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def freeze_for_finetuning(generator: Generator, n_trainable_blocks: int) -> list[str]:
    """Freeze all of ``generator`` but its last ``n_trainable_blocks`` resolution blocks.

    The mapping network, constant input, ``conv1`` / ``to_rgb1`` and the earlier blocks get
    ``requires_grad=False``; returns the names of the parameters left trainable.
    """
    prefixes = trainable_block_prefixes(generator.size, n_trainable_blocks)
    trainable = []
    for name, param in generator.named_parameters():
        param.requires_grad_(matches_prefix(name, prefixes))
        if param.requires_grad:
            trainable.append(name)
    return trainable
