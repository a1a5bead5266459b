"""The engine behind `scenimefy translate`: load a translator generator, translate images.

Differences from the authors' `test.py` (docs/deviations.md): images keep their exact
size (reflect-padded to a multiple of 4 and cropped back, instead of resized), outputs are
rounded (not truncated) to uint8, and large images can be translated in blended tiles.
No Ray and no MLflow here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from scenimefy.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, list_image_files, load_image, walk_folders
from scenimefy.data.images import from_uint8, save_image_atomic, to_uint8
from scenimefy.inference import tone
from scenimefy.models.translator import (
    ResnetGenerator,
    infer_generator_arch,
    load_generator_state,
    strip_wrapper_prefixes,
)
from scenimefy.models.utils import load_weights
from scenimefy.stages.checkpoint import TRANSLATOR_SNAPSHOT_FILE, save_torch_atomic, unwrap
from scenimefy.stages.device import resolve_device

SNAPSHOT_FORMAT = "scenimefy.translator.generator"
SNAPSHOT_VERSION = 1

# The generator downsamples twice (factor 4) and its residual blocks reflect-pad by 1, which
# needs at least 2 pixels at 1/4 resolution: inputs are padded to a multiple of 4, >= 8.
SIZE_MULTIPLE = 4
MIN_SIDE = 8

# ----------------------------------------------------------------------------------------
# Snapshots: save and load


def _check_plain_data(value: Any, where: str = "config") -> None:
    """Snapshots load with weights_only=True, so the config must be plain data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain_data(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            _check_plain_data(v, f"{where}.{k}")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}; a snapshot config holds only dicts, lists, "
        "str, int, float, bool and None"
    )


def save_translator_snapshot(path: str | os.PathLike, generator: torch.nn.Module, config: Mapping[str, Any]) -> str:
    """Write the inference snapshot `translate`, `demo` and pair generation load; atomic.

    `{"format", "version", "arch": {"ngf", "n_blocks"}, "generator": state_dict, "config"}`,
    state of the unwrapped module on the CPU, loadable with `torch.load(weights_only=True)`.
    """
    g = unwrap(generator)
    if not isinstance(g, ResnetGenerator):
        raise ValueError(f"save_translator_snapshot expects a ResnetGenerator, got {type(g).__name__}")
    config = dict(config)
    _check_plain_data(config)
    snapshot = {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "arch": dict(g.arch),
        "generator": {k: v.detach().cpu().clone() for k, v in g.state_dict().items()},
        "config": config,
    }
    save_torch_atomic(snapshot, path)
    return os.fspath(path)


TRANSLATOR_EXPECTED = (
    f"a translator's {TRANSLATOR_SNAPSHOT_FILE} (written by `scenimefy train` into <run.output_dir>/<run.name>/), "
    f"a training checkpoint directory holding one, or the authors' Shinkai_net_G.pth (a state dict of model.N.* keys)"
)


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _snapshot_arch(obj: dict, file: str) -> tuple[dict[str, int], Any]:
    fmt = obj.get("format")
    if fmt != SNAPSHOT_FORMAT:
        raise ValueError(
            f"{file}: a {fmt!r} file, not a translator snapshot ({SNAPSHOT_FORMAT!r}); "
            f"pass a checkpoint directory or its {TRANSLATOR_SNAPSHOT_FILE}"
        )
    version = obj.get("version")
    if version != SNAPSHOT_VERSION:
        raise ValueError(
            f"{file}: translator snapshot version {version!r} is not supported "
            f"(this scenimefy reads version {SNAPSHOT_VERSION})"
        )
    arch = obj.get("arch")
    if not isinstance(arch, dict) or not all(isinstance(arch.get(k), int) for k in ("ngf", "n_blocks")):
        raise ValueError(
            f"{file}: translator snapshot has no valid 'arch' (expected ints ngf and n_blocks, got {arch!r})"
        )
    return {"ngf": arch["ngf"], "n_blocks": arch["n_blocks"]}, obj.get("generator")


def load_translator(path: str | os.PathLike, device: str | torch.device = "cpu") -> ResnetGenerator:
    """A ready generator (eval mode, on `device`) from any of the accepted checkpoints.

    (a) the authors' `Shinkai_net_G.pth` (a CUT state dict, `model.N.*` keys; architecture
    inferred from the shapes), (b) our snapshot file (`save_translator_snapshot`), (c) one of
    our checkpoint directories holding `generator.pt`, (d) a `.safetensors` file written by
    `scenimefy export` (architecture in its metadata). Any problem raises a one-line
    ValueError naming the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        file = os.path.join(path, TRANSLATOR_SNAPSHOT_FILE)
        if not os.path.isfile(file):
            raise ValueError(
                f"{path}: not a translator checkpoint directory ({TRANSLATOR_SNAPSHOT_FILE} is missing); "
                f"expected {TRANSLATOR_EXPECTED}"
            )
    elif os.path.isfile(path):
        file = path
    else:
        raise ValueError(f"{path}: no such file or directory")
    if file.lower().endswith(".safetensors"):  # `scenimefy export --format safetensors`: no pickle
        from scenimefy.inference.export import load_safetensors_generator

        return load_safetensors_generator(file).to(device).eval()
    obj = load_weights(file, TRANSLATOR_EXPECTED)

    if isinstance(obj, dict) and "format" in obj:
        arch, state = _snapshot_arch(obj, file)
    elif isinstance(obj, dict) and any(
        isinstance(k, str) and k.startswith("model.") for k in strip_wrapper_prefixes(obj)
    ):
        try:
            arch = infer_generator_arch(obj)
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from None
        state = obj
    else:
        raise ValueError(f"{file} is not a translator checkpoint; expected {TRANSLATOR_EXPECTED}")
    generator = ResnetGenerator(**arch)
    try:
        load_generator_state(generator, state)
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from None
    return generator.to(device).eval()


# ----------------------------------------------------------------------------------------
# Translating tensors: exact size, batched, tiled


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size G runs at: each side rounded up to a multiple of 4, at least 8."""

    def up(n: int) -> int:
        return max(MIN_SIDE, -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE)

    return up(height), up(width)


def _pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """(B, C, h, w) -> (B, C, height, width), padded at the bottom/right.

    Reflection avoids the dark border a zero pad leaves; a pad as large as the side itself
    (tiny images only) cannot reflect and replicates instead.
    """
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@torch.inference_mode()
def translate_batch(generator: torch.nn.Module, images: Sequence[Tensor]) -> list[Tensor]:
    """Translate (3, h_i, w_i) images in [-1, 1] sharing one padded size in one G call.

    Each is padded to `padded_size`, translated, and cropped back to its exact size.
    Returns (3, h_i, w_i) tensors in [-1, 1] on the generator's device.
    """
    sizes = {padded_size(*im.shape[-2:]) for im in images}
    if len(sizes) != 1:
        raise ValueError(f"translate_batch needs images with one padded size, got {sorted(sizes)}")
    (ph, pw) = sizes.pop()
    device = next(generator.parameters()).device
    x = torch.cat([_pad_to(im.to(device, torch.float32)[None], ph, pw) for im in images])  # (B, 3, ph, pw)
    y = generator(x).clamp(-1.0, 1.0)
    return [y[i, :, : im.shape[-2], : im.shape[-1]] for i, im in enumerate(images)]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), neighbours sharing at
    least `overlap` pixels; the last tile is flush with the end. One tile if length <= tile."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _ramp(n: int, overlap: int, left: bool, right: bool) -> Tensor:
    """(n,) blend weights: linear ramps over `overlap` pixels at edges shared with a
    neighbour, 1 elsewhere; never 0, so every pixel has weight."""
    w = torch.ones(n)
    k = min(overlap, n)
    if k > 0:
        r = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        if left:
            w[:k] = torch.minimum(w[:k], r)
        if right:
            w[n - k :] = torch.minimum(w[n - k :], r.flip(0))
    return w


@contextlib.contextmanager
def _instance_norm_statistics(
    generator: torch.nn.Module,
    stats: dict[torch.nn.Module, tuple[Tensor, Tensor]],
    *,
    record: bool,
    mix: Callable[[torch.nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
):
    """Record (record=True) or impose (record=False) the per-channel mean and variance each
    InstanceNorm2d of `generator` normalises with; (1, C, 1, 1) tensors keyed by module.

    With `mix` (and record=False), each layer normalises with `mix(module, mean, var)` of its
    input's own (B, C, 1, 1) statistics instead of `stats` (video frames: statistics smoothed
    over time, scenimefy.inference.video)."""

    def hook(module: torch.nn.InstanceNorm2d, args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
        x = args[0]
        if record or mix is not None:
            own = (x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True))
            if record:
                stats[module] = own
                return None
            mean, var = mix(module, *own)
        else:
            mean, var = stats[module]
        y = (x - mean) * torch.rsqrt(var + module.eps)
        if module.affine:
            y = y * module.weight[None, :, None, None] + module.bias[None, :, None, None]
        return y

    handles = [m.register_forward_hook(hook) for m in generator.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def translate_tiled(
    generator: torch.nn.Module,
    image: Tensor,
    *,
    tile: int,
    tile_overlap: int,
    batch_size: int,
    shared_statistics: bool = True,
) -> Tensor:
    """Translate one (3, H, W) image in overlapping tiles blended with linear ramps.

    Tiles are `tile` x `tile` (clipped to the image) and translated `batch_size` at a time;
    an image no larger than one tile is translated whole, exactly as `translate_batch`.
    Instance norm would see per-tile statistics, so each tile would get its own colour
    balance; with `shared_statistics` every tile is normalised with the statistics of one
    pass over the whole image, downscaled to the pixel budget of a tile batch
    (batch_size * tile^2; full size when it fits). Measured on random generators this
    halves the difference to the untiled result and flattens the seams. Returns (3, H, W)
    in [-1, 1].
    """
    _check_tiling(tile, tile_overlap)
    h, w = image.shape[-2:]
    if h <= tile and w <= tile:
        return translate_batch(generator, [image])[0]
    stats: dict[torch.nn.Module, tuple[Tensor, Tensor]] = {}
    if shared_statistics:
        scale = min(1.0, (batch_size * tile * tile / (h * w)) ** 0.5)
        small = image
        if scale < 1.0:
            size = (max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale)))
            small = F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False)[
                0
            ].clamp(-1, 1)
        with _instance_norm_statistics(generator, stats, record=True):
            translate_batch(generator, [small])

    ys, xs = tile_starts(h, tile, tile_overlap), tile_starts(w, tile, tile_overlap)
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    device = next(generator.parameters()).device
    acc = torch.zeros(3, h, w, device=device)
    weight = torch.zeros(1, h, w, device=device)
    with contextlib.ExitStack() as stack:
        if shared_statistics:
            stack.enter_context(_instance_norm_statistics(generator, stats, record=False))
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            outs = translate_batch(generator, [image[:, y0 : y0 + th, x0 : x0 + tw] for y0, x0 in chunk])
            for (y0, x0), out in zip(chunk, outs, strict=True):
                wy = _ramp(th, tile_overlap, left=y0 > 0, right=y0 + th < h)
                wx = _ramp(tw, tile_overlap, left=x0 > 0, right=x0 + tw < w)
                wt = (wy[:, None] * wx[None, :]).to(device)[None]  # (1, th, tw)
                acc[:, y0 : y0 + th, x0 : x0 + tw] += out * wt
                weight[:, y0 : y0 + th, x0 : x0 + tw] += wt
    return acc.div_(weight)


def _check_tiling(tile: int, tile_overlap: int) -> None:
    if tile < 0 or (tile > 0 and (tile % SIZE_MULTIPLE or tile < 2 * MIN_SIDE)):
        raise ValueError(f"tile={tile}: expected 0 (no tiling) or a multiple of {SIZE_MULTIPLE} >= {2 * MIN_SIDE}")
    if tile > 0 and not 0 <= tile_overlap < tile:
        raise ValueError(f"tile_overlap={tile_overlap}: expected 0 <= tile_overlap < tile ({tile})")


# ----------------------------------------------------------------------------------------
# Translating files


@dataclass
class TranslateReport:
    """What `translate_paths` did: outputs written (input order), inputs skipped, the inputs
    translated in tiles because they were too large for the memory budget, and the inputs whose
    output name was taken by an earlier input (`renamed`: source, its output, the earlier source)."""

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    auto_tiled: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# Memory: how many pixels one G pass may take

# Peak memory of one fp32 G pass per padded pixel and per ngf channel: 1.79-1.84 KB per pixel
# at ngf 64 on the CPU (512-1536 px, peak RSS), i.e. 28 bytes per channel; rounded up.
BYTES_PER_PIXEL_PER_NGF = 32
# On top of the activations, a pass holds its padded input, its output and the clamped output.
PASS_BYTES_PER_PIXEL = 48
# What translating one image holds besides G's passes, per pixel of the image: the decoded photo,
# its float copy, the tile blend's accumulators and the 8-bit result. An allowance, not an exact
# count: with it the measured peaks stay under the budget (BENCHMARKS.md "Translate: the memory budget").
IMAGE_BYTES_PER_PIXEL = 80
# Share of the device's free memory translating may use when no budget is given.
FREE_MEMORY_SHARE = 0.7


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now: the GPU's free plus cached memory, or the host's
    MemAvailable; None where the platform does not say (no limit is applied then)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class MemoryPlan:
    """Sizes the work on one image (or one batch) to a memory budget: the image's own buffers
    (`image_bytes_per_pixel`) plus G's passes (`bytes_per_pixel` of the padded size). Batches of
    large images shrink; an image that does not fit in one pass is translated in the largest tiles
    that fit beside its buffers (a 12-megapixel photo needs about 25 GB in one pass at ngf 64).
    What the process holds anyway (PyTorch, the weights) is not counted."""

    budget: int  # bytes; 0: no limit
    bytes_per_pixel: int  # one G pass, per padded pixel
    image_bytes_per_pixel: int = IMAGE_BYTES_PER_PIXEL

    @classmethod
    def for_generator(cls, generator: torch.nn.Module, device: torch.device, budget_gib: float = 0.0) -> "MemoryPlan":
        """`budget_gib` > 0 is taken as is; 0 means FREE_MEMORY_SHARE of what is free now."""
        if budget_gib < 0:
            raise ValueError(f"memory budget {budget_gib} GiB: expected >= 0 (0: from the free memory)")
        bpp = BYTES_PER_PIXEL_PER_NGF * int(getattr(unwrap(generator), "ngf", 64)) + PASS_BYTES_PER_PIXEL
        if budget_gib > 0:
            return cls(int(budget_gib * 2**30), bpp)
        free = free_memory(device)
        return cls(int(free * FREE_MEMORY_SHARE) if free else 0, bpp)

    def bytes_for(self, height: int, width: int, batch: int = 1) -> int:
        """Images of this size translated `batch` at a time in one pass: their buffers and the pass."""
        return batch * height * width * (self.bytes_per_pixel + self.image_bytes_per_pixel)

    def image_bytes(self, height: int, width: int) -> int:
        return height * width * self.image_bytes_per_pixel

    def batch_for(self, height: int, width: int, batch_size: int) -> int:
        """Images of this padded size per G call: at most `batch_size`, at least 1."""
        if not self.budget:
            return batch_size
        return max(1, min(batch_size, self.budget // self.bytes_for(height, width)))

    def tiles_for(self, tile: int, height: int, width: int, batch_size: int) -> int:
        """Tiles of `tile` px per G call for an image of height x width: what fits beside the image's
        buffers, at most `batch_size`, at least 1."""
        if not self.budget:
            return batch_size
        left = self.budget - self.image_bytes(height, width)
        return max(1, min(batch_size, left // (tile * tile * self.bytes_per_pixel)))

    def tile_for(self, height: int, width: int, overlap: int = 0) -> int:
        """0 if one image of this padded size fits the budget in one pass, else the largest tile side
        whose pass fits beside the image's buffers: a multiple of 64, at least 128 and more than twice
        `overlap` (at 128 px an image too large for the budget even in tiles; see `tiles_fit`)."""
        if not self.budget or self.bytes_for(height, width) <= self.budget:
            return 0
        left = max(0, self.budget - self.image_bytes(height, width))
        side = int((left / self.bytes_per_pixel) ** 0.5) // 64 * 64
        return max(128, side, (2 * overlap // 64 + 1) * 64)

    def tiles_fit(self, height: int, width: int, tile: int) -> bool:
        """Whether the image's buffers and one pass of a `tile`-px tile fit the budget."""
        return not self.budget or self.image_bytes(height, width) + tile * tile * self.bytes_per_pixel <= self.budget


@dataclass
class _Job:
    index: int
    source: str
    output: str


@dataclass
class _Plan:
    jobs: list[_Job]
    skipped: list[tuple[str, str]]  # (input, reason)
    renamed: list[tuple[str, str, str]]  # (source, output, the earlier source that has the plain name)


def _plan(inputs: Sequence[str | os.PathLike], out_dir: str, exclude_extensions: tuple[str, ...] = ()) -> _Plan:
    """Map inputs to output paths; collect what cannot be translated.

    Files in folders ending in one of `exclude_extensions` (lower case, e.g. videos, which
    another translator takes) are left out silently instead of being reported as skipped.

    Files keep their stem (`<stem>.png` in out_dir); folders keep their sub-folder structure.
    Clashing output names (`a.jpg` and `a.png`) get `_1`, `_2`, ... in input order, listed in
    `renamed`. A folder without images is skipped with that reason. Raises ValueError if an
    output would overwrite an input.
    """
    candidates: list[tuple[str, str]] = []  # (source, wanted output)
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            images = list_image_files(item)
            if not images:
                skipped.append((item, f"no images in this folder or below (looked for {' '.join(IMAGE_EXTENSIONS)})"))
            image_set = set(images)
            for src in images:
                rel_dir = os.path.relpath(os.path.dirname(src), item)
                stem = os.path.splitext(os.path.basename(src))[0]
                candidates.append((src, os.path.normpath(os.path.join(out_dir, rel_dir, stem + ".png"))))
            # other files in the folder are reported, so the count matches what the user sees
            for dirpath, filenames in walk_folders(item):  # a symlink cycle is entered once
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    if path not in image_set and not name.lower().endswith(exclude_extensions):
                        skipped.append((path, f"unsupported file type (expected one of {' '.join(IMAGE_EXTENSIONS)})"))
        elif os.path.isfile(item):
            stem = os.path.splitext(os.path.basename(item))[0]
            candidates.append((item, os.path.join(out_dir, stem + ".png")))
        else:
            skipped.append((item, "no such file or directory"))

    sources = {os.path.realpath(p) for p, _ in candidates} | {os.path.realpath(p) for p, _ in skipped}
    jobs: list[_Job] = []
    renamed: list[tuple[str, str, str]] = []
    seen_sources: set[str] = set()
    taken: dict[str, str] = {}  # normalised output path -> the source writing it
    for src, out in candidates:
        real = os.path.realpath(src)
        if real in seen_sources:  # the same file named twice (e.g. a file and its folder)
            continue
        seen_sources.add(real)
        base, n = out[: -len(".png")], 0
        first = taken.get(os.path.normcase(os.path.abspath(out)))
        while os.path.normcase(os.path.abspath(out)) in taken:
            n += 1
            out = f"{base}_{n}.png"
        taken[os.path.normcase(os.path.abspath(out))] = src
        if os.path.realpath(out) in sources:
            raise ValueError(
                f"translating {src} would write {out}, which is one of the inputs; "
                "choose an output folder outside the inputs (--out)"
            )
        if first is not None:
            renamed.append((src, out, first))
        jobs.append(_Job(len(jobs), src, out))
    return _Plan(jobs, skipped, renamed)


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is `max_side` (aspect ratio kept, bicubic); 0 keeps the size."""
    w, h = img.size
    if max_side <= 0 or max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)


def _to_uint8_bands(y: Tensor, rows: int = 256) -> np.ndarray:
    """`to_uint8` of a (3, H, W) result, `rows` rows at a time: its float temporaries stay the size of
    a band instead of several copies of a large image. The same bytes as converting it whole."""
    y = y.float().cpu()
    out = np.empty((y.shape[-2], y.shape[-1], 3), dtype=np.uint8)
    for top in range(0, y.shape[-2], rows):
        out[top : top + rows] = to_uint8(y[:, top : top + rows])
    return out


def translate_paths(
    generator: torch.nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    batch_size: int,
    max_side: int,
    tile: int,
    tile_overlap: int,
    device: str | torch.device,
    memory_budget_gib: float = 0.0,
    progress: bool = True,
    exclude_extensions: tuple[str, ...] = (),
    keep_tone: float = 0.0,
) -> TranslateReport:
    """Translate image files and folders into PNGs under `out_dir`.

    Each image is optionally downscaled (longer side <= max_side, 0 = keep), translated at
    its exact size (padded to a multiple of 4, cropped back) or, when `tile` > 0 and the
    image is larger than a tile, in blended tiles. Images of one padded size are batched
    `batch_size` at a time. A `MemoryPlan` (`memory_budget_gib`, 0: 70 % of the free memory)
    shrinks batches of large images and, when `tile` is 0, translates an image too large for
    one pass in tiles instead of running out of memory (said once on stderr, listed in the
    report). Unreadable or unsupported files are skipped, reported on stderr
    and listed in the report. Outputs are written atomically as `<stem>.png` (sub-folders of
    folder inputs kept; clashing names get `_1`, `_2`, ...); an output that would replace an
    input is a ValueError before anything runs. `generator` is moved to `device`. Files in
    folders ending in `exclude_extensions` (videos: scenimefy.inference.video) are left out.
    `keep_tone` > 0 puts each photo's brightness, contrast and colour cast back on its
    translation at that strength (scenimefy.inference.tone).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if max_side < 0:
        raise ValueError(f"max_side={max_side}: expected >= 0 (0 keeps the size)")
    _check_tiling(tile, tile_overlap)
    tone.check_strength(keep_tone)
    out_dir = os.fspath(out_dir)
    device = resolve_device(device)
    generator = generator.to(device).eval()  # modules move in place
    plan = MemoryPlan.for_generator(generator, device, memory_budget_gib)
    auto_tiled: list[str] = []
    over_budget: list[str] = []  # images over the budget even in the smallest tiles (said once)

    planned = _plan(inputs, out_dir, tuple(exclude_extensions))
    jobs, skipped = planned.jobs, planned.skipped
    for path, reason in skipped:
        tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)
    written: dict[int, str] = {}
    bar = tqdm(total=len(jobs), disable=not progress, unit="img", desc="translate")

    def write(job: _Job, y: Tensor) -> None:
        save_image_atomic(job.output, _to_uint8_bands(y))
        written[job.index] = job.output
        bar.update(1)

    # Images wait here until `batch_size` of one padded size are collected; the buffer is
    # bounded so a folder of all-different sizes does not pile up in memory.
    pending: OrderedDict[tuple[int, int], list[tuple[_Job, Tensor]]] = OrderedDict()
    max_pending = 4 * batch_size

    def flush(key: tuple[int, int]) -> None:
        group = pending.pop(key)
        for (job, x), y in zip(group, translate_batch(generator, [x for _, x in group]), strict=True):
            write(job, tone.keep_tone(y, x, keep_tone))

    try:
        for job in jobs:
            # decode (unreadable files are skipped, never fatal)
            try:
                img = _downscale(load_image(job.source), max_side)
            except (ImageDecodeError, OSError) as e:
                reason = _one_line(e)
                skipped.append((job.source, reason))
                tqdm.write(f"skipped {job.source}: {reason}", file=sys.stderr)
                bar.update(1)
                continue
            x = from_uint8(np.array(img))[0]  # (3, H, W) in [-1, 1]
            del img  # the decoded photo is not needed any more
            h, w = x.shape[-2:]

            # large images in tiles, one at a time
            if tile > 0 and (h > tile or w > tile):
                tiles_per_pass = plan.tiles_for(tile, h, w, batch_size)
                y = translate_tiled(generator, x, tile=tile, tile_overlap=tile_overlap, batch_size=tiles_per_pass)
                y = tone.keep_tone(y, x, keep_tone)
                del x  # only the result is needed now
                write(job, y)
                continue
            key = padded_size(h, w)
            fitted_tile = plan.tile_for(*key, overlap=tile_overlap) if tile == 0 else 0
            if fitted_tile:
                if not auto_tiled:
                    tqdm.write(
                        f"{job.source}: {w}x{h} needs about {plan.bytes_for(*key) / 2**30:.1f} GiB in one pass, over "
                        f"the {plan.budget / 2**30:.1f} GiB budget; translating it (and any other such image) in "
                        f"{fitted_tile}-px tiles. Choose with --tile, --max-side or --memory-budget-gib",
                        file=sys.stderr,
                    )
                if not plan.tiles_fit(h, w, fitted_tile) and not over_budget:
                    tqdm.write(
                        f"{job.source}: {w}x{h} needs about {plan.image_bytes(h, w) / 2**30:.1f} GiB besides the "
                        f"generator's passes, more than the {plan.budget / 2**30:.1f} GiB budget leaves even for "
                        f"{fitted_tile}-px tiles; translating it anyway (this and any other such image). Lower "
                        "--max-side to stay within the budget",
                        file=sys.stderr,
                    )
                    over_budget.append(job.source)
                auto_tiled.append(job.source)
                y = translate_tiled(generator, x, tile=fitted_tile, tile_overlap=tile_overlap, batch_size=1)
                y = tone.keep_tone(y, x, keep_tone)
                del x
                write(job, y)
                continue

            # the rest batched by padded size, as many per pass as the memory budget allows
            pending.setdefault(key, []).append((job, x))
            if len(pending[key]) >= plan.batch_for(*key, batch_size):
                flush(key)
            elif sum(len(g) for g in pending.values()) >= max_pending:
                flush(next(iter(pending)))
        while pending:
            flush(next(iter(pending)))
    finally:
        bar.close()
    return TranslateReport(
        written=[written[i] for i in sorted(written)], skipped=skipped, auto_tiled=auto_tiled, renamed=planned.renamed
    )
