"""Stage 3 networks: CUT's anti-aliased ResNet generator G, PatchGAN discriminators D_U and
D_P, and the patch projection heads F / F_s (docs/method.md, "Stage 3").

Module indices and buffer names reproduce CUT's layout exactly, so the authors' released
`Shinkai_net_G.pth` loads with `strict=True`. Plain PyTorch: no file paths, no Ray.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------
# Primitives


def init_weights(module: nn.Module, gain: float) -> nn.Module:
    """CUT's `init_type=xavier`: Xavier-normal(gain) for every conv/linear weight, zero biases.

    With gain 0.02 the freshly built networks start close to linear, as in CUT.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _binomial_filter(taps: Sequence[float]) -> Tensor:
    """Normalised separable 2-D filter: outer(taps, taps) / sum, shape (K, K)."""
    a = torch.tensor(taps, dtype=torch.float32)
    filt = a[:, None] * a[None, :]
    return filt / filt.sum()


def strip_wrapper_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes, nested in any order."""
    out = {}
    for key, value in state.items():
        while isinstance(key, str):
            if key.startswith("module."):
                key = key[len("module.") :]
            elif key.startswith("_orig_mod."):
                key = key[len("_orig_mod.") :]
            else:
                break
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------
# Layers: anti-aliased resampling (Zhang 2019, as in CUT networks.py)


class Downsample(nn.Module):
    """Blur-then-subsample: reflect pad 1, depthwise [1,2,1]x[1,2,1]/16, stride 2.

    (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)). The blur keeps the encoder shift-stable.
    Buffer `filt` (C, 1, 3, 3) is part of the state dict, as in CUT.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", _binomial_filter([1.0, 2.0, 1.0])[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


class Upsample(nn.Module):
    """Zero-insert then blur: replicate pad 1, depthwise transposed conv (stride 2,
    [1,3,3,1]x[1,3,3,1]/64 * 4, padding 2), then drop the first and last row/column.

    (B, C, H, W) -> (B, C, 2H, 2W). Buffer `filt` (C, 1, 4, 4) as in CUT.
    """

    def __init__(self, channels: int):
        super().__init__()
        filt = _binomial_filter([1.0, 3.0, 3.0, 1.0]) * 4.0  # x stride^2 keeps the mean
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # replicate pad 1, written as concatenation: torch.compile on the CPU (torch 2.14) fails
        # on replication_pad2d_backward's stride metadata; the values are the same
        x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
        x = torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)
        y = F.conv_transpose2d(x, self.filt, stride=2, padding=2, groups=x.shape[1])  # (B, C, 2H+2, 2W+2)
        return y[:, :, 1:-1, 1:-1]


def _norm(channels: int) -> nn.InstanceNorm2d:
    """CUT's instance norm: no affine parameters, no running statistics (train == eval)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


# ----------------------------------------------------------------------------------------
# Blocks


class ResnetBlock(nn.Module):
    """x + [ReflPad1, Conv3x3, IN, ReLU, ReflPad1, Conv3x3, IN](x); (B, C, H, W) -> same.

    The Sequential is named `conv_block` so keys are `conv_block.1.*` and `conv_block.5.*`.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _norm(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


# ----------------------------------------------------------------------------------------
# Networks


class ResnetGenerator(nn.Module):
    """G: CUT's anti-aliased ResNet generator, RGB (B, 3, H, W) in [-1, 1] -> tanh RGB.

    One flat `nn.Sequential` named `model`, indices as in CUT (docs/method.md, "Stage 3"): the
    contrastive losses tap its outputs by index (default taps 0, 4, 8, 12, 16). H and W must
    be multiples of 4 (two stride-2 downsamplings) and at least 8.
    """

    def __init__(self, *, ngf: int, n_blocks: int):
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ResnetGenerator: ngf must be >= 1 and n_blocks >= 0, got ngf={ngf}, n_blocks={n_blocks}")
        self.ngf = ngf
        self.n_blocks = n_blocks
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, ngf, kernel_size=7, padding=0, bias=True),
            _norm(ngf),
            nn.ReLU(True),
        ]
        # downsampling path: conv at full resolution, then blur-downsample
        for mult in (1, 2):
            cin, cout = ngf * mult, ngf * mult * 2
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=True),
                _norm(cout),
                nn.ReLU(True),
                Downsample(cout),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        # upsampling path: blur-upsample, then conv
        for mult in (4, 2):
            cin, cout = ngf * mult, ngf * mult // 2
            layers += [
                Upsample(cin),
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=True),
                _norm(cout),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, kernel_size=7, padding=0, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self, gain=0.02)

    @property
    def arch(self) -> dict[str, int]:
        """The constructor arguments: what a snapshot records to rebuild this network."""
        return {"ngf": self.ngf, "n_blocks": self.n_blocks}

    def _check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = [int(i) for i in layers]
        n = len(self.model)
        bad = [i for i in layers if not 0 <= i < n]
        if bad:
            raise ValueError(
                f"feature layers {bad} out of range: this generator has layers 0..{n - 1} "
                f"(ngf={self.ngf}, n_blocks={self.n_blocks})"
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"feature layers {layers} contain duplicates")
        return layers

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channel width of each tap's output, from the module list (no forward needed)."""
        layers = self._check_layers(layers)
        widths, c = [], 3
        for m in self.model:
            if isinstance(m, nn.Conv2d):
                c = m.out_channels
            elif isinstance(m, ResnetBlock):
                c = m.dim
            widths.append(c)
        return [widths[i] for i in layers]

    @staticmethod
    def _check_size(x: Tensor) -> None:
        # two stride-2 downsamplings: other sizes would come back a few pixels off
        h, w = x.shape[-2:]
        if h % 4 or w % 4 or h < 8 or w < 8:
            raise ValueError(
                f"ResnetGenerator needs H and W multiples of 4 and >= 8, got {h}x{w}; "
                "pad the image (scenimefy.inference.translate_batch does)"
            )

    def forward(
        self, x: Tensor, layers: Sequence[int] | None = None, encode_only: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]] | list[Tensor]:
        """(B, 3, H, W) -> (B, 3, H, W) in [-1, 1].

        With `layers`: also the tap features of the same pass, `(y, feats)`; with
        `encode_only`: just the features. Both go through `forward` so a DDP wrapper sees them.
        """
        if layers is None:
            self._check_size(x)
            return self.model(x)
        if encode_only:
            return self.encode(x, layers)
        return self.forward_with_features(x, layers)

    def forward_with_features(self, x: Tensor, layers: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """One pass: the translation and the outputs of `model[i]` for i in `layers` (in that order).

        Lets the training step reuse the encoder features of its forward pass instead of
        re-running the encoder (the authors run it twice). As in CUT, the ReLUs are in place:
        a tap on a norm layer (2, 5, 9, ...) sees the value after the following ReLU.
        """
        self._check_size(x)
        layers = self._check_layers(layers)
        wanted = set(layers)
        found: dict[int, Tensor] = {}
        for i, m in enumerate(self.model):
            x = m(x)
            if i in wanted:
                found[i] = x
        return x, [found[i] for i in layers]

    def encode(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """The outputs of `model[i]` for i in `layers`; stops after the deepest one.

        Taps at 256 px, ngf 64: 0 -> (B,3,262,262), 4 -> (B,128,256,256),
        8 -> (B,256,128,128), 12 and 16 -> (B,256,64,64).
        """
        layers = self._check_layers(layers)
        if not layers:
            raise ValueError("encode needs at least one feature layer")
        wanted, last = set(layers), max(layers)
        found: dict[int, Tensor] = {}
        for i, m in enumerate(self.model):
            x = m(x)
            if i in wanted:
                found[i] = x
            if i == last:
                break
        return [found[i] for i in layers]


class PatchGANDiscriminator(nn.Module):
    """D_U / D_P: CUT's anti-aliased PatchGAN ("basic", instance norm; docs/method.md).

    (B, in_channels, H, W) -> (B, 1, H', W') patch scores; 256 px -> 30x30 with n_layers 3.
    D_U sees RGB (3 channels); D_P sees the concatenation (x^p, image), 6 channels.
    """

    def __init__(self, in_channels: int, ndf: int, n_layers: int):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGANDiscriminator: n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=1, padding=1),
            nn.LeakyReLU(0.2, True),
            Downsample(ndf),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=True),
                _norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
                Downsample(ndf * mult),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=True),
            _norm(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)
        init_weights(self, gain=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class PatchProjection(nn.Module):
    """F / F_s: CUT's PatchSampleF, built eagerly from the tap widths.

    Per tap: sample patch positions, then Linear(C, dim) -> ReLU -> Linear(dim, dim), then L2
    normalisation. The batch dimension is kept, (B, P, dim), because the losses work per
    image (the authors' flattening to (B*P, dim) broke batch sizes > 1).
    """

    def __init__(self, in_channels: Sequence[int], dim: int):
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.dim = dim
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in self.in_channels
        )
        init_weights(self, gain=0.02)

    def forward(
        self,
        feats: Sequence[Tensor],
        num_patches: int,
        patch_ids: Sequence[Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Embed patches of each tap's (B, C, H, W) feature -> list of (B, P, dim), list of ids.

        Without `patch_ids`, draws `randperm(H*W)` on the CPU from `generator` and keeps the
        first min(num_patches, H*W) positions, shared by the whole batch; pass the returned
        ids back to embed another image at the same positions (ids then override num_patches).
        """
        if len(feats) != len(self.mlps):
            raise ValueError(f"PatchProjection built for {len(self.mlps)} taps, got {len(feats)} features")
        if patch_ids is not None and len(patch_ids) != len(feats):
            raise ValueError(f"got {len(patch_ids)} patch id tensors for {len(feats)} features")
        if patch_ids is None and num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        embeddings, ids_out = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps, strict=True)):
            _, c, h, w = feat.shape
            if c != self.in_channels[i]:
                raise ValueError(f"tap {i}: PatchProjection expects {self.in_channels[i]} channels, got {c}")
            if patch_ids is None:
                ids = torch.randperm(h * w, generator=generator)[: min(num_patches, h * w)]
            else:
                ids = patch_ids[i]
            if feat.device.type == "cuda" and ids.device.type == "cpu":
                # pinned and non-blocking: a plain copy would wait for all queued GPU work
                ids = ids.to(torch.long).pin_memory().to(feat.device, non_blocking=True)
            ids = ids.to(device=feat.device, dtype=torch.long)
            # Gather the P positions first, then transpose: (B, C, P) -> (B, P, C). Permuting
            # the whole map first would copy B*C*H*W values to use P of the H*W positions.
            patches = feat.flatten(2).index_select(2, ids).transpose(1, 2).contiguous()
            x = mlp(patches)  # (B, P, dim)
            x = x / (x.norm(p=2, dim=-1, keepdim=True) + 1e-7)
            embeddings.append(x)
            ids_out.append(ids)
        return embeddings, ids_out


# ----------------------------------------------------------------------------------------
# Loading released and saved weights

_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.1\.weight$")


def infer_generator_arch(state: Mapping[str, Tensor]) -> dict[str, int]:
    """`{"ngf": .., "n_blocks": ..}` of a CUT-style generator state dict (keys `model.N.*`).

    ngf from `model.1.weight` (ngf, 3, 7, 7); n_blocks from the number of residual blocks.
    """
    state = strip_wrapper_prefixes(state)
    first = state.get("model.1.weight")
    if not isinstance(first, Tensor) or first.dim() != 4 or tuple(first.shape[1:]) != (3, 7, 7):
        found = "missing" if first is None else f"shape {list(getattr(first, 'shape', []))}"
        raise ValueError(f"not a CUT ResnetGenerator state dict: model.1.weight should be (ngf, 3, 7, 7), is {found}")
    n_blocks = sum(1 for k in state if _BLOCK_KEY.match(k))
    return {"ngf": int(first.shape[0]), "n_blocks": n_blocks}


def _first(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_generator_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a state dict strictly, after stripping `module.` / `_orig_mod.` prefixes.

    On any mismatch, raises a one-line ValueError naming missing keys, unexpected keys and
    shape mismatches (first few of each, with counts) and the expected architecture.
    """
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError("not a state dict (expected a mapping of parameter names to tensors)")
    state = strip_wrapper_prefixes(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(state[k].shape)} vs expected {list(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        arch = getattr(model, "arch", None)
        expected = type(model).__name__ + (f"({', '.join(f'{k}={v}' for k, v in arch.items())})" if arch else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_first(shapes)})")
        hint = ""
        if isinstance(model, ResnetGenerator):
            try:
                found = infer_generator_arch(state)
                hint = f"; the weights look like ngf={found['ngf']}, n_blocks={found['n_blocks']}"
            except ValueError:
                hint = "; the weights are not a CUT ResnetGenerator"
        raise ValueError(f"weights do not match {expected}: {'; '.join(parts)}{hint}")
    model.load_state_dict(state, strict=True)
