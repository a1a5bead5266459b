"""Typed configuration: one dataclass per stage, nested in one pipeline config.

A hyperparameter has exactly one default: its field here. Presets (YAML files in
`scenimefy/configs/`) and `key=value` overrides only override. Unknown keys, wrong types and
invalid choices fail with a message naming the key and the valid values.

Every field is declared through `param`, which marks it with
- `doc`: one line on what it sets;
- `affects`: `results` when it changes what the stage that reads it produces (learning rates,
  loss weights, sizes, seeds, schedules, input paths), `execution` when it only changes how or
  where the stage runs or what it logs (intervals, worker resources, compilation, output paths);
  the pipeline's "settings changed" check compares a finished stage's `results` fields only;
- `unit` of a number (steps, kimg, px, GiB, ...), and its valid values: a `Range` (numbers are
  finite, and a documented 0, e.g. "0: off", is accepted even where the range starts at 1) or
  `choices`. `load_config` and `from_dict` refuse a value outside them, naming key, value and range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user-caused configuration error; the CLI prints it as one line."""


# ----------------------------------------------------------------------------------------
# Field metadata

RESULTS = "results"  # changes what the stage produces
EXECUTION = "execution"  # changes only how or where it runs, or what it logs
AFFECTS = (RESULTS, EXECUTION)

PRECISIONS = {"fp32", "bf16"}
COMPILE_MODES = {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}
DEVICES = ("auto", "cpu", "cuda")
STYLEGAN_SIZES = (32, 64, 128, 256, 512, 1024)  # scenimefy.models.stylegan2.SUPPORTED_SIZES


@dataclass(frozen=True)
class Range:
    """Valid values of a number: finite, between `low` and `high` (each bound closed unless `*_open`).

    `zero` names what 0 means when 0 lies outside the bounds (e.g. "off"): 0 is then valid too.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    zero: str = ""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if value == 0 and self.zero:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, name: str = "x") -> str:
        """`>= 1`, `> 0`, `0 <= beta1 < 1`, `>= 1, or 0 (off)`, `any finite number`."""
        lo = f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = f"{'<' if self.high_open else '<='} {self.high:g}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            text = f"{self.low:g} {'<' if self.low_open else '<='} {name} {hi}"
        elif math.isfinite(self.low):
            text = lo
        elif math.isfinite(self.high):
            text = hi
        else:
            text = "any finite number"
        return f"{text}, or 0 ({self.zero})" if self.zero else text


def at_least(low: float, *, zero: str = "") -> Range:
    return Range(low=low, zero=zero)


def above(low: float, *, zero: str = "") -> Range:
    return Range(low=low, low_open=True, zero=zero)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(low=low, high=high, low_open=low_open, high_open=high_open)


PROBABILITY = between(0, 1)
ADAM_BETA = between(0, 1, high_open=True)  # torch.optim.Adam needs 0 <= beta < 1
ANY_NUMBER = Range()


def param(
    default: Any,
    *,
    doc: str,
    affects: str,
    unit: str = "",
    valid: Range | None = None,
    choices: typing.Iterable[Any] = (),
    symbol: str = "",
) -> Any:
    """A config field with its metadata (see the module docstring); `symbol` names it in a range message."""
    if affects not in AFFECTS:
        raise AssertionError(f"affects={affects!r}: expected one of {AFFECTS}")
    metadata = {"doc": doc, "affects": affects, "unit": unit, "valid": valid, "choices": tuple(choices)}
    if symbol:
        metadata["symbol"] = symbol
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FieldInfo:
    """The metadata of one config field, with its dotted key."""

    key: str
    type: Any
    doc: str
    affects: str
    unit: str
    valid: Range | None
    choices: tuple[Any, ...]
    symbol: str

    def check(self, value: Any) -> None:
        """Raise ConfigError naming key, value and the valid values when `value` is outside them."""
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if self.choices and v not in self.choices:
                raise ConfigError(f"{self.key}={v!r}: expected one of {sorted(self.choices)}")
            if self.valid is not None and v not in self.valid:
                finite = "" if isinstance(v, (int, float)) and math.isfinite(v) else "a finite number "
                name = self.symbol or self.key.rsplit(".", 1)[-1]
                raise ConfigError(f"{self.key}={v!r}: need {finite}{self.valid.describe(name)}")


# ----------------------------------------------------------------------------------------
# Stage sections


@dataclass
class RunConfig:
    """Where a run lives and how it is distributed."""

    name: str = param(
        "scenimefy",
        doc="run name, a plain folder name (no '/', not starting with '.'): a rerun with the same name resumes",
        affects=EXECUTION,
    )
    output_dir: str = param(
        "runs",
        doc="root of run directories: a local path, on a cluster one every node mounts (URIs are refused)",
        affects=EXECUTION,
    )
    seed: int = param(0, doc="every random stream derives from (seed, rank, step)", affects=RESULTS, valid=at_least(0))
    num_workers: int = param(
        1,
        doc="Ray Train workers (DDP ranks); results: the global batch is batch_size_per_worker x num_workers",
        affects=RESULTS,
        unit="workers",
        valid=at_least(1),
    )
    use_gpu: bool = param(
        False,
        doc=(
            "one GPU per worker, NCCL; False: CPU, gloo (the same computation up to rounding; stage 2 uses "
            "pairs.precision on a GPU only)"
        ),
        affects=EXECUTION,
    )
    cpus_per_worker: float = param(
        1.0, doc="logical CPUs reserved per Train worker", affects=EXECUTION, unit="CPUs", valid=above(0)
    )
    max_failures: int = param(
        1,
        doc="whole-group restarts from the latest checkpoint (FailureConfig)",
        affects=EXECUTION,
        unit="restarts",
        valid=at_least(0),
    )
    mlflow_tracking_uri: str = param(
        "", doc="empty: $MLFLOW_TRACKING_URI, else sqlite under the run dir", affects=EXECUTION
    )
    mlflow_experiment: str = param("scenimefy", doc="MLflow experiment of the run", affects=EXECUTION)
    torch_threads: int = param(
        0,
        doc="intra-op threads per worker (0: torch's default)",
        affects=EXECUTION,
        unit="threads",
        valid=at_least(1, zero="torch's default"),
    )
    cpu_keep_heap: bool = param(
        True,
        doc="CPU training: glibc keeps freed memory for reuse (no per-step page faults; scenimefy/stages/host.py)",
        affects=EXECUTION,
    )


@dataclass
class DataConfig:
    """Datasets of stage 3 (folders or URIs that pyarrow's filesystems understand)."""

    photos: str = param("", doc="X: real scene photos (recursive image folder)", affects=RESULTS)
    anime: str = param("", doc="Y: real anime scenes (recursive image folder)", affects=RESULTS)
    pairs: str = param(
        "", doc="pseudo pairs: folder with trainA/ (x^p) and trainB/ (y^p), matched by name", affects=RESULTS
    )
    load_size: int = param(
        256,
        doc="images are bicubic-resized to load_size x load_size",
        affects=RESULTS,
        unit="px",
        valid=at_least(4),
    )
    crop_size: int = param(
        256,
        doc="then randomly cropped to crop_size (jitter when load_size > crop_size); a multiple of 4",
        affects=RESULTS,
        unit="px",
        valid=at_least(4),
    )
    flip: bool = param(
        True, doc="random horizontal flip of the unpaired images (independent for x and y)", affects=RESULTS
    )
    pair_flip: bool = param(False, doc="flip pseudo pairs (both images together); the authors do not", affects=RESULTS)
    cache_dir: str = param(
        "", doc="where decoded images are cached as Parquet; empty: <run dir>/data", affects=EXECUTION
    )


@dataclass
class TranslatorConfig:
    """Stage 3: semi-supervised translation (CUT-based generator, two branches)."""

    # networks (CUT defaults)
    ngf: int = param(64, doc="generator base width", affects=RESULTS, unit="channels", valid=at_least(1))
    n_blocks: int = param(9, doc="residual blocks of G", affects=RESULTS, unit="blocks", valid=at_least(1))
    ndf: int = param(64, doc="PatchGAN base width (D_U and D_P)", affects=RESULTS, unit="channels", valid=at_least(1))
    n_layers_d: int = param(
        3,
        doc="PatchGAN downsampling layers (3 = 70x70 receptive field)",
        affects=RESULTS,
        unit="layers",
        valid=at_least(1),
    )
    nce_layers: tuple[int, ...] = param(
        (0, 4, 8, 12, 16), doc="encoder taps for F / F_s (layer indices)", affects=RESULTS, valid=at_least(0)
    )
    num_patches: int = param(256, doc="patch positions per tap", affects=RESULTS, unit="patches", valid=at_least(1))
    head_dim: int = param(256, doc="width of the F / F_s MLPs", affects=RESULTS, unit="channels", valid=at_least(1))
    # loss weights (paper Eq. 8-9); 0 turns a term off
    lambda_gan: float = param(
        1.0, doc="L_GAN(G, D_U), unsupervised adversarial term", affects=RESULTS, valid=at_least(0)
    )
    lambda_gan_p: float = param(
        1.0, doc="L_cGAN(G, D_P), supervised adversarial term", affects=RESULTS, valid=at_least(0)
    )
    lambda_style: float = param(
        0.05,
        doc="L_StylePatchNCE (applied once; the authors' code squared it)",
        affects=RESULTS,
        valid=at_least(0),
    )
    lambda_src: float = param(0.05, doc="L_SRC, semantic relation consistency", affects=RESULTS, valid=at_least(0))
    lambda_hdce: float = param(
        0.1, doc="L_hDCE, hard-negative decoupled contrastive loss", affects=RESULTS, valid=at_least(0)
    )
    hdce_identity: bool = param(
        True, doc="also apply hDCE to (y, G(y)) and average (authors' dce_idt)", affects=RESULTS
    )
    nce_tau: float = param(0.07, doc="temperature of StylePatchNCE and hDCE", affects=RESULTS, valid=above(0))
    gamma_start: float = param(50.0, doc="hDCE hard-negative temperature at t = 0", affects=RESULTS, valid=above(0))
    gamma_end: float = param(
        10.0, doc="... at t = T (the curriculum is linear in the epoch)", affects=RESULTS, valid=above(0)
    )
    gamma_curriculum: bool = param(True, doc="False: gamma_start throughout", affects=RESULTS)
    lambda_sup_decay: bool = param(True, doc="lambda_sup(t) = cos(pi (t-1) / 2T); False: constant 1", affects=RESULTS)
    # optimisation
    lr: float = param(2e-4, doc="Adam learning rate of G, D_U, D_P, F and F_s", affects=RESULTS, valid=above(0))
    beta1: float = param(0.5, doc="Adam beta1", affects=RESULTS, valid=ADAM_BETA)
    beta2: float = param(0.999, doc="Adam beta2", affects=RESULTS, valid=ADAM_BETA)
    n_epochs: int = param(10, doc="epochs at constant lr", affects=RESULTS, unit="epochs", valid=at_least(0))
    n_epochs_decay: int = param(
        10,
        doc="epochs of linear lr decay (T = n_epochs + n_epochs_decay >= 1)",
        affects=RESULTS,
        unit="epochs",
        valid=at_least(0),
    )
    batch_size_per_worker: int = param(
        1, doc="images per worker and step", affects=RESULTS, unit="images", valid=at_least(1)
    )
    steps_per_epoch: int = param(
        0,
        doc="0: max(|X|, |Y|) // global batch (the authors' epoch)",
        affects=RESULTS,
        unit="steps",
        valid=at_least(1, zero="max(|X|, |Y|) // global batch"),
    )
    max_steps: int = param(
        0,
        doc="stop after this many steps (0: run all epochs); for demos and tests",
        affects=RESULTS,
        unit="steps",
        valid=at_least(1, zero="run all epochs"),
    )
    precision: str = param(
        "fp32",
        doc="fp32 | bf16 autocast (GPU; or a CPU with bf16 instructions); results: bf16 changes the numerics",
        affects=RESULTS,
        choices=PRECISIONS,
    )
    channels_last: bool = param(
        False, doc="channels_last memory format (GPU); the same computation in another layout", affects=EXECUTION
    )
    compile: bool = param(
        False,
        doc="torch.compile G, D_U and D_P (faster steps after minutes of compiling; the same computation)",
        affects=EXECUTION,
    )
    compile_mode: str = param(
        "default",
        doc="torch.compile mode: default | reduce-overhead (CUDA graphs, small batches) | max-autotune[-no-cudagraphs]",
        affects=EXECUTION,
        choices=COMPILE_MODES,
    )
    init_from: str = param(
        "", doc="start from these generator weights (ours or Shinkai_net_G.pth), counters at 0", affects=RESULTS
    )
    # bookkeeping
    log_every_steps: int = param(
        10, doc="metrics to MLflow every this many steps", affects=EXECUTION, unit="steps", valid=at_least(1)
    )
    sample_every_steps: int = param(
        200,
        doc="sample grid (x, G(x), x^p, G(x^p), y^p) to MLflow (0: off)",
        affects=EXECUTION,
        unit="steps",
        valid=at_least(1, zero="off"),
    )
    checkpoint_every_steps: int = param(
        500, doc="plus one at the end of every epoch", affects=EXECUTION, unit="steps", valid=at_least(1)
    )
    keep_checkpoints: int = param(
        2, doc="latest checkpoints Ray Train keeps", affects=EXECUTION, unit="checkpoints", valid=at_least(1)
    )


@dataclass
class TranslateConfig:
    """Inference with the translator generator."""

    batch_size: int = param(
        4,
        doc="images (or tiles) per G pass; results: it also sets the pixel budget of a tiled image's statistics",
        affects=RESULTS,
        unit="images",
        valid=at_least(1),
    )
    max_side: int = param(
        0,
        doc="downscale so the longer side is at most this (0: keep size)",
        affects=RESULTS,
        unit="px",
        valid=at_least(1, zero="keep size"),
    )
    tile: int = param(
        0,
        doc="translate in tiles of this size (0: whole image)",
        affects=RESULTS,
        unit="px",
        valid=at_least(1, zero="whole image"),
    )
    tile_overlap: int = param(
        32, doc="pixels shared by neighbouring tiles, blended linearly", affects=RESULTS, unit="px", valid=at_least(0)
    )
    memory_budget_gib: float = param(
        0.0,
        doc=(
            "memory for translating one image or batch: its buffers and the generator's passes, not the process's"
            " baseline (0: 70 % of the device's free memory); larger images are tiled (results)"
        ),
        affects=RESULTS,
        unit="GiB",
        valid=above(0, zero="70 % of the device's free memory"),
    )
    device: str = param("auto", doc="auto | cpu | cuda", affects=EXECUTION, choices=DEVICES)
    backend: str = param(
        "torch",
        doc="torch: the PyTorch generator; onnxruntime: an .onnx file from `scenimefy export` (CPU, or CUDA)",
        affects=EXECUTION,
        choices=("torch", "onnxruntime"),
    )
    video_smoothing: float = param(
        0.8,
        doc="videos: weight of past frames in each frame's instance-norm statistics (moving average; "
        "0: per-frame statistics, which flicker)",
        affects=RESULTS,
        valid=between(0, 1, high_open=True),
    )
    keep_tone: float = param(
        0.0,
        doc="strength with which each photo's brightness, contrast and colour cast are put back on its translation "
        "(0: the generator's own, as in the paper; 1: the photo's; scenimefy.inference.tone)",
        affects=RESULTS,
        valid=between(0, 1),
    )


SERVE_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class ServeConfig:
    """`scenimefy serve`: the Ray Serve application (scenimefy/serve/, README "Serve")."""

    host: str = param("127.0.0.1", doc="address the HTTP proxy binds (0.0.0.0: every interface)", affects=EXECUTION)
    port: int = param(8000, doc="HTTP port of the page and the API", affects=EXECUTION, valid=between(1, 65535))
    replicas: int = param(
        1,
        doc="translator replicas, one model copy each (0: autoscaling between min_replicas and max_replicas)",
        affects=EXECUTION,
        unit="replicas",
        valid=at_least(1, zero="autoscaling"),
    )
    min_replicas: int = param(
        1, doc="autoscaling: fewest replicas", affects=EXECUTION, unit="replicas", valid=at_least(0)
    )
    max_replicas: int = param(
        4, doc="autoscaling: most replicas", affects=EXECUTION, unit="replicas", valid=at_least(1)
    )
    device: str = param("auto", doc="auto | cpu | cuda (one GPU per replica)", affects=EXECUTION, choices=DEVICES)
    cpus_per_replica: int = param(
        1, doc="CPUs (and torch threads) of a translator replica", affects=EXECUTION, unit="CPUs", valid=at_least(1)
    )
    precision: str = param(
        "auto",
        doc="auto: bf16 on a GPU that supports it, else fp32 | fp32 | bf16 (GPU only)",
        affects=RESULTS,
        choices=SERVE_PRECISIONS,
    )
    max_batch_size: int = param(
        8,
        doc="requests one translator call may take (dynamic batching)",
        affects=EXECUTION,
        unit="images",
        valid=at_least(1),
    )
    batch_wait_timeout_s: float = param(
        0.02,
        doc="how long a partial batch waits for more requests",
        affects=EXECUTION,
        unit="s",
        valid=at_least(0),
    )
    max_upload_mib: float = param(
        25.0, doc="largest accepted upload (413 above)", affects=EXECUTION, unit="MiB", valid=above(0)
    )
    max_pixels: int = param(
        40_000_000,
        doc="largest accepted image, width x height (413 above)",
        affects=EXECUTION,
        unit="px",
        valid=at_least(1),
    )
    max_side: int = param(
        0,
        doc="default downscale of the longer side (0: keep size); a request may ask for less",
        affects=RESULTS,
        unit="px",
        valid=at_least(1, zero="keep size"),
    )
    request_timeout_s: float = param(
        120.0, doc="a translation not done by then is answered 504", affects=EXECUTION, unit="s", valid=above(0)
    )
    max_ongoing_requests: int = param(
        16, doc="requests one translator replica holds at once", affects=EXECUTION, unit="requests", valid=at_least(1)
    )
    max_queued_requests: int = param(
        64,
        doc="requests waiting for a translator replica; over it: 503 with Retry-After",
        affects=EXECUTION,
        unit="requests",
        valid=at_least(1),
    )
    memory_budget_gib: float = param(
        0.0,
        doc="memory one G pass of a replica may use (0: 70 % of the device's free memory); larger images are tiled",
        affects=RESULTS,
        unit="GiB",
        valid=above(0, zero="70 % of the device's free memory"),
    )
    tile_overlap: int = param(
        32, doc="pixels shared by neighbouring tiles of a large image", affects=RESULTS, unit="px", valid=at_least(0)
    )
    max_video_upload_mib: float = param(
        200.0, doc="largest accepted video upload (413 above)", affects=EXECUTION, unit="MiB", valid=above(0)
    )
    max_video_pixels: int = param(
        1_000_000_000,
        doc="largest accepted video, frames x width x height as translated (413 above; 1e9: 16 s of 1080p at 30 fps)",
        affects=EXECUTION,
        unit="px",
        valid=at_least(1),
    )
    video_timeout_s: float = param(
        1800.0, doc="a video not translated by then is answered 504", affects=EXECUTION, unit="s", valid=above(0)
    )
    video_batch_size: int = param(4, doc="video frames per G pass", affects=EXECUTION, unit="frames", valid=at_least(1))
    video_smoothing: float = param(
        0.8,
        doc="videos: weight of past frames in each frame's instance-norm statistics (0: per frame)",
        affects=RESULTS,
        valid=between(0, 1, high_open=True),
    )
    keep_tone: float = param(
        0.0,
        doc="strength with which each photo's (or frame's) brightness, contrast and colour cast are put back on its "
        "translation (0: the generator's own; translate.keep_tone)",
        affects=RESULTS,
        valid=between(0, 1),
    )


@dataclass
class PriorsConfig:
    """Pretrained priors (CLIP, LPIPS-VGG, Mask2Former, Inception), resolved by `scenimefy.priors.loading`."""

    cache_dir: str = param(
        "",
        doc="looked up first and downloaded into; empty: $SCENIMEFY_CACHE or ~/.cache/scenimefy",
        affects=EXECUTION,
    )
    offline: bool = param(False, doc="forbid downloads: a missing file is an error naming it", affects=EXECUTION)
    clip_model: str = param(
        "ViT-B-32",
        doc="open_clip architecture, or local-dir:DIR (open_clip_config.json + weights; Ray workers build it too)",
        affects=RESULTS,
    )
    clip_pretrained: str = param("openai", doc="open_clip pretrained tag, or a path to a weights file", affects=RESULTS)
    lpips_net: str = param("vgg", doc="LPIPS trunk", affects=RESULTS)
    lpips_weights: str = param(
        "", doc="LPIPS v0.1 linear heads (.pth); empty: the copy inside the lpips package", affects=RESULTS
    )
    vgg16_weights: str = param(
        "", doc="torchvision VGG16 ImageNet weights for the LPIPS trunk; empty: cache/hub", affects=RESULTS
    )
    mask2former: str = param(
        "facebook/mask2former-swin-base-ade-semantic", doc="hub id or local directory", affects=RESULTS
    )
    inception_weights: str = param(
        "", doc="FID Inception (pt_inception-2015-12-05) weights; empty: cache/hub", affects=RESULTS
    )


@dataclass
class StyleGANConfig:
    """StyleGAN2 architecture shared by G_s and G_t (rosinality's layout; docs/method.md, stage 0)."""

    size: int = param(
        256, doc="output resolution (32..1024, a power of 2)", affects=RESULTS, unit="px", choices=STYLEGAN_SIZES
    )
    latent_dim: int = param(512, doc="z and w dimension", affects=RESULTS, valid=at_least(1))
    n_mlp: int = param(8, doc="mapping network depth", affects=RESULTS, unit="layers", valid=at_least(1))
    channel_multiplier: int = param(2, doc="rosinality's channel_multiplier", affects=RESULTS, valid=at_least(1))
    channel_base: int = param(
        16384,
        doc="channels at a resolution = min(channel_max, channel_base * cm // res)",
        affects=RESULTS,
        unit="channels",
        valid=at_least(1),
    )
    channel_max: int = param(
        512, doc="(tiny widths for tests: lower both)", affects=RESULTS, unit="channels", valid=at_least(1)
    )


@dataclass
class PretrainConfig:
    """Stage 0: StyleGAN2 on real scene photos (G_s)."""

    photos: str = param("", doc="real landscape photos (recursive folder or URI); empty: data.photos", affects=RESULTS)
    batch_size_per_worker: int = param(
        16,
        doc="images per worker and step (1..4 or a multiple of 4)",
        affects=RESULTS,
        unit="images",
        valid=at_least(1),
    )
    total_kimg: float = param(
        3520.0,
        doc="training length in thousands of real images shown (220k its x 16)",
        affects=RESULTS,
        unit="kimg",
        valid=above(0),
    )
    lr: float = param(0.002, doc="Adam learning rate of G and D", affects=RESULTS, valid=above(0))
    beta1: float = param(0.0, doc="Adam beta1", affects=RESULTS, valid=ADAM_BETA)
    beta2: float = param(0.99, doc="Adam beta2", affects=RESULTS, valid=ADAM_BETA)
    r1_gamma: float = param(10.0, doc="lazy R1 weight on reals (0: off)", affects=RESULTS, valid=at_least(0))
    d_reg_every: int = param(16, doc="R1 interval", affects=RESULTS, unit="steps", valid=at_least(1))
    path_weight: float = param(
        2.0, doc="path-length regularisation weight (0: off)", affects=RESULTS, valid=at_least(0)
    )
    g_reg_every: int = param(4, doc="path-length interval", affects=RESULTS, unit="steps", valid=at_least(1))
    path_batch_shrink: int = param(
        2, doc="the path-length batch is the batch divided by this", affects=RESULTS, valid=at_least(1)
    )
    path_decay: float = param(0.01, doc="running mean decay of the path length", affects=RESULTS, valid=between(0, 1))
    mixing_prob: float = param(0.9, doc="style mixing probability", affects=RESULTS, valid=PROBABILITY)
    ema_half_life_kimg: float = param(
        10.0,
        doc="EMA decay 0.5 ** (batch / (half_life * 1000)) per step; 0: G_ema copies G",
        affects=RESULTS,
        unit="kimg",
        valid=at_least(0),
    )
    flip: bool = param(True, doc="random horizontal flip of reals", affects=RESULTS)
    precision: str = param("fp32", doc="fp32 | bf16", affects=RESULTS, choices=PRECISIONS)
    log_every_kimg: float = param(
        1.0, doc="metrics to MLflow (0: off)", affects=EXECUTION, unit="kimg", valid=above(0, zero="off")
    )
    sample_every_kimg: float = param(
        10.0,
        doc="fixed-seed sample grid to MLflow (0: off)",
        affects=EXECUTION,
        unit="kimg",
        valid=above(0, zero="off"),
    )
    checkpoint_every_kimg: float = param(
        50.0,
        doc="checkpoint interval, plus one at the end (0: only at the end)",
        affects=EXECUTION,
        unit="kimg",
        valid=above(0, zero="only at the end"),
    )
    keep_checkpoints: int = param(
        2, doc="latest checkpoints Ray Train keeps", affects=EXECUTION, unit="checkpoints", valid=at_least(1)
    )
    init_from: str = param("", doc="start from a rosinality or scenimefy checkpoint (weights only)", affects=RESULTS)


@dataclass
class FinetuneConfig:
    """Stage 1: G_t fine-tuned from G_s on anime scenes with semantic constraints."""

    source_checkpoint: str = param(
        "",
        doc="G_s: rosinality checkpoint (lhq-220000.pt) or ours; empty: stage 0's output",
        affects=RESULTS,
    )
    anime: str = param("", doc="anime scenes (recursive folder or URI); empty: data.anime", affects=RESULTS)
    iterations: int = param(1000, doc="training length", affects=RESULTS, unit="steps", valid=at_least(1))
    batch_size_per_worker: int = param(
        8,
        doc="images per worker and step (1..4 or a multiple of 4)",
        affects=RESULTS,
        unit="images",
        valid=at_least(1),
    )
    n_trainable_blocks: int = param(
        3,
        doc="resolution blocks trained, counted from the output end (FreezeG)",
        affects=RESULTS,
        unit="blocks",
        valid=at_least(0),
    )
    lambda_global: float = param(
        1.0, doc="weight of D_CLIP + lambda_lpips * LPIPS (paper Eq. 3)", affects=RESULTS, valid=at_least(0)
    )
    lambda_lpips: float = param(0.01, doc="weight of LPIPS inside the global term", affects=RESULTS, valid=at_least(0))
    lambda_patch: float = param(
        0.05, doc="weight of the CLIP patch contrastive loss L_patch", affects=RESULTS, valid=at_least(0)
    )
    patch_count: int = param(16, doc="K crops per image", affects=RESULTS, unit="patches", valid=at_least(1))
    patch_size: int = param(64, doc="crop side in pixels (at 256 px)", affects=RESULTS, unit="px", valid=at_least(1))
    patch_tau: float = param(1.0, doc="InfoNCE temperature of L_patch", affects=RESULTS, valid=above(0))
    lr: float = param(0.002, doc="Adam learning rate of G_t and D", affects=RESULTS, valid=above(0))
    beta1: float = param(0.0, doc="Adam beta1", affects=RESULTS, valid=ADAM_BETA)
    beta2: float = param(0.99, doc="Adam beta2", affects=RESULTS, valid=ADAM_BETA)
    r1_gamma: float = param(10.0, doc="lazy R1 weight on reals (0: off)", affects=RESULTS, valid=at_least(0))
    d_reg_every: int = param(16, doc="R1 interval", affects=RESULTS, unit="steps", valid=at_least(1))
    g_reg_every: int = param(
        4,
        doc="G's lazy-regularisation Adam correction, kept from stage 0 (no path length here)",
        affects=RESULTS,
        unit="steps",
        valid=at_least(1),
    )
    mixing_prob: float = param(0.9, doc="style mixing probability", affects=RESULTS, valid=PROBABILITY)
    ema_half_life_kimg: float = param(
        10.0, doc="as pretrain.ema_half_life_kimg", affects=RESULTS, unit="kimg", valid=at_least(0)
    )
    flip: bool = param(True, doc="random horizontal flip of the anime images", affects=RESULTS)
    precision: str = param("fp32", doc="fp32 | bf16", affects=RESULTS, choices=PRECISIONS)
    log_every_steps: int = param(
        10, doc="metrics to MLflow (0: off)", affects=EXECUTION, unit="steps", valid=at_least(1, zero="off")
    )
    sample_every_steps: int = param(
        100, doc="sample pairs to MLflow (0: off)", affects=EXECUTION, unit="steps", valid=at_least(1, zero="off")
    )
    checkpoint_every_steps: int = param(
        250,
        doc="checkpoint interval, plus one at the end (0: only at the end)",
        affects=EXECUTION,
        unit="steps",
        valid=at_least(1, zero="only at the end"),
    )
    keep_checkpoints: int = param(
        2, doc="latest checkpoints Ray Train keeps", affects=EXECUTION, unit="checkpoints", valid=at_least(1)
    )


@dataclass
class PairsConfig:
    """Stage 2: pseudo-pair generation and segmentation-guided selection."""

    source_checkpoint: str = param("", doc="G_s; empty: stage 0's output", affects=RESULTS)
    target_checkpoint: str = param("", doc="G_t; empty: stage 1's output", affects=RESULTS)
    num_candidates: int = param(
        0,
        doc="seeds to generate and score (0: stream until target_kept)",
        affects=RESULTS,
        unit="seeds",
        valid=at_least(1, zero="stream until target_kept"),
    )
    target_kept: int = param(
        30000,
        doc="stop once this many pairs are kept (>= 1 when num_candidates=0)",
        affects=RESULTS,
        unit="pairs",
        valid=at_least(0),
    )
    first_seed: int = param(0, doc="seed of the first candidate", affects=RESULTS, valid=at_least(0))
    truncation: float = param(
        0.7,
        doc="truncation psi of both generators (the paper: 0.7)",
        affects=RESULTS,
        valid=between(0, 1, low_open=True),
        symbol="psi",
    )
    mean_latent_samples: int = param(
        4096, doc="latents averaged for the truncation centre", affects=RESULTS, unit="samples", valid=at_least(1)
    )
    share_noise: bool = param(
        True, doc="same per-layer noise for G_s and G_t (the authors drew it twice)", affects=RESULTS
    )
    bce_threshold: float = param(5.0, doc="keep a pair when L_BCE < threshold ...", affects=RESULTS, valid=above(0))
    min_classes: int = param(
        2, doc="... and the photo shows at least this many ADE20k classes", affects=RESULTS, valid=at_least(1)
    )
    batch_size: int = param(
        16,
        doc="rows per Ray Data batch; selection is batch-invariant (a row's images depend on generator_group only)",
        affects=EXECUTION,
        unit="rows",
        valid=at_least(1),
    )
    generator_actors: int = param(
        1, doc="Ray Data actor pool size for generation", affects=EXECUTION, unit="actors", valid=at_least(1)
    )
    segmenter_actors: int = param(1, doc="... and for Mask2Former", affects=EXECUTION, unit="actors", valid=at_least(1))
    gpus_per_actor: float = param(1.0, doc="used when run.use_gpu", affects=EXECUTION, unit="GPUs", valid=above(0))
    precision: str = param(
        "bf16", doc="Mask2Former precision on GPU (fp32 on CPU)", affects=RESULTS, choices=PRECISIONS
    )
    generator_group: int = param(
        8,
        doc="seeds per generator call, aligned to seed // group: a row's images never depend on batching",
        affects=RESULTS,
        unit="seeds",
        valid=at_least(1),
    )
    chunk_size: int = param(
        10000,
        doc="at most this many seeds per chunk (the unit of resume; actor pools restart per chunk)",
        affects=EXECUTION,
        unit="seeds",
        valid=at_least(1),
    )
    max_candidates: int = param(
        0,
        doc="streaming mode stops after this many candidates (0: no limit)",
        affects=RESULTS,
        unit="seeds",
        valid=at_least(1, zero="no limit"),
    )


@dataclass
class EvaluateConfig:
    """Metrics (docs/method.md): FID/KID against the anime set, L_BCE photo vs translation."""

    photos: str = param("", doc="held-out test photos to translate and score (empty: no evaluation)", affects=RESULTS)
    anime: str = param("", doc="anime reference set for FID/KID; empty: data.anime", affects=RESULTS)
    size: int = param(
        256,
        doc="both sets resized to size x size for FID/KID (the recommended protocol); a multiple of 4",
        affects=RESULTS,
        unit="px",
        valid=at_least(8),
    )
    max_images: int = param(
        0,
        doc="score at most this many photos (0: all)",
        affects=RESULTS,
        unit="images",
        valid=at_least(1, zero="all"),
    )
    batch_size: int = param(16, doc="images per scoring pass", affects=EXECUTION, unit="images", valid=at_least(1))
    fid: bool = param(True, doc="FID and KID (Inception-v3 pool features)", affects=RESULTS)
    semantic: bool = param(True, doc="L_BCE between each photo and its translation (Mask2Former)", affects=RESULTS)
    bce_weight: float = param(
        10.0, doc="tuning objective = FID + bce_weight * L_BCE", affects=RESULTS, valid=at_least(0)
    )
    every_epochs: int = param(
        0,
        doc="during translator training: evaluate every N epochs (0: off); scores are logged, G is unchanged",
        affects=EXECUTION,
        unit="epochs",
        valid=at_least(1, zero="off"),
    )


@dataclass
class TuneConfig:
    """Ray Tune sweeps over stage 3 (`scenimefy tune`); search spaces are YAML files in tuning/."""

    name: str = param(
        "sweep",
        doc="experiment name: rerunning a sweep with the same name resumes it (Tuner.restore)",
        affects=EXECUTION,
    )
    space: str = param("", doc="search-space YAML (tuning/README.md), e.g. tuning/paper.yaml", affects=RESULTS)
    num_samples: int = param(
        16,
        doc="trials drawn from the space (times every grid_search combination)",
        affects=RESULTS,
        unit="trials",
        valid=at_least(1),
    )
    metric: str = param(
        "objective",
        doc="fid | kid | l_bce | objective (= FID + evaluate.bce_weight * L_BCE); minimised",
        affects=RESULTS,
    )
    grace_period: int = param(
        2,
        doc="ASHA: epochs every trial trains before it may be stopped",
        affects=RESULTS,
        unit="epochs",
        valid=at_least(1),
    )
    reduction_factor: float = param(
        2.0,
        doc="ASHA: at each rung only the best 1/reduction_factor continue",
        affects=RESULTS,
        valid=above(1),
    )
    max_concurrent_trials: int = param(
        0,
        doc=(
            "0: as many as the cluster's GPUs (CPUs on a CPU cluster) fit; results: ASHA's stop decisions depend "
            "on which trials run together"
        ),
        affects=RESULTS,
        unit="trials",
        valid=at_least(1, zero="as many as the cluster's GPUs (CPUs on a CPU cluster) fit"),
    )
    max_failures: int = param(
        1,
        doc="retries of a failed trial (its Train run resumes from its own checkpoint)",
        affects=EXECUTION,
        unit="retries",
        valid=at_least(0),
    )
    manifest: str = param(
        "", doc="stage-2 manifest (Parquet) that a pairs.bce_threshold dimension filters", affects=RESULTS
    )
    search_seed: int = param(0, doc="seed of the random search", affects=RESULTS, valid=at_least(0))


@dataclass
class PipelineConfig:
    """`scenimefy pipeline`: stages 0-3 in one driver, each stage's outputs feeding the next.

    See scenimefy/distributed/pipeline.py.
    """

    stages: tuple[str, ...] = param(
        (),
        doc="pretrain, finetune, pairs, train; empty: every stage whose output the config does not give",
        affects=EXECUTION,
    )


@dataclass
class Config:
    """The whole pipeline: one section per stage."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    translator: TranslatorConfig = field(default_factory=TranslatorConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    stylegan: StyleGANConfig = field(default_factory=StyleGANConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self) -> "Config":
        """Every field against its marks (range, choices), then the cross-field checks; ConfigError with the fix."""
        for info in field_infos().values():
            info.check(get_value(self, info.key))
        t, d = self.translator, self.data
        if d.crop_size > d.load_size:
            raise ConfigError(
                f"data.crop_size={d.crop_size} exceeds data.load_size={d.load_size}: set crop_size <= load_size"
            )
        if d.crop_size % 4:
            raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of 4 (two 2x downsamplings)")
        if t.n_epochs + t.n_epochs_decay < 1:
            raise ConfigError(
                f"translator.n_epochs={t.n_epochs} + translator.n_epochs_decay={t.n_epochs_decay}: need at least "
                "1 epoch in all"
            )
        check_run_name(self.run.name)
        check_output_dir(self.run.output_dir)
        return self


def check_run_name(name: str) -> str:
    """`run.name` names a folder under run.output_dir: one plain path component, nothing that climbs out."""
    bad = (
        not name
        or name in (".", "..")
        or name.startswith((".", "~", "-"))
        or any(c in name for c in "/\\:")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or len(name) > 200
    )
    if bad:
        raise ConfigError(
            f"run.name={name!r}: need a plain folder name (letters, digits, '-', '_', '.', spaces; no '/', '\\' "
            "or ':', not starting with '.', '~' or '-', at most 200 characters), e.g. run.name=my-run"
        )
    return name


def check_output_dir(output_dir: str) -> str:
    """`run.output_dir` is a local (or mounted) path: the stages write plain files under it.

    Snapshots, selected pairs, Parquet caches and pipeline records are written with local file
    calls, so a URI here would become a relative folder named "s3:" and the outputs would be lost
    with the job's working dir. Refused at parse time, before anything starts.
    """
    if not output_dir:
        raise ConfigError("run.output_dir is empty: give a folder, e.g. run.output_dir=runs")
    if "://" in output_dir:
        raise ConfigError(
            f"run.output_dir={output_dir}: URIs are not supported for outputs (the stages write local files); "
            "give a path every node mounts, e.g. run.output_dir=/shared/runs (data.* may be s3:// or gs:// URIs)"
        )
    return output_dir


# ----------------------------------------------------------------------------------------
# Metadata queries


@functools.cache
def field_infos() -> typing.Mapping[str, FieldInfo]:
    """`{"translator.lr": FieldInfo(...), ...}`: every value field of Config, in declaration order."""
    infos: dict[str, FieldInfo] = {}
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            m, key = f.metadata, f"{section.name}.{f.name}"
            if "affects" not in m:
                raise AssertionError(f"{key}: declare the field with config.param(...)")
            infos[key] = FieldInfo(
                key, hints[f.name], m["doc"], m["affects"], m["unit"], m["valid"], m["choices"], m.get("symbol", "")
            )
    return types.MappingProxyType(infos)  # read-only: one shared copy


def results_keys(reads: typing.Iterable[str]) -> list[str]:
    """The `affects="results"` keys among `reads`: section names (every field of it) or dotted keys."""
    reads = tuple(reads)
    infos = field_infos()
    for item in reads:
        if item not in infos and not any(k.startswith(item + ".") for k in infos):
            raise AssertionError(f"{item!r} is neither a config section nor a key")
    return [k for k, info in infos.items() if info.affects == RESULTS and (k in reads or k.split(".", 1)[0] in reads)]


def get_value(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".", 1)
    return getattr(getattr(cfg, section), name)


# ----------------------------------------------------------------------------------------
# Loading: presets, YAML files, key=value overrides


def preset_names() -> list[str]:
    files = resources.files("scenimefy.configs").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def load_config(preset_or_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- preset (name or YAML path) <- `section.key=value` overrides."""
    cfg = Config()
    if preset_or_path:
        apply_dict(cfg, read_yaml(preset_or_path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        set_value(cfg, key.strip(), value.strip())  # a string: typed by the field, never by YAML rules
    return cfg.validate()


def read_yaml(preset_or_path: str) -> dict:
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {preset_or_path!r} does not exist")
        text = path.read_text()
    else:
        names = preset_names()
        if preset_or_path not in names:
            raise ConfigError(
                f"unknown preset {preset_or_path!r}: valid presets are {', '.join(names)} (or a .yaml path)"
            )
        text = resources.files("scenimefy.configs").joinpath(preset_or_path + ".yaml").read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {preset_or_path!r} must be a mapping of sections")
    return data


# Keys renamed since configs were saved (config.yaml beside checkpoints, pipeline records): old -> new.
# `apply_dict` (so `from_dict` and YAML files) reads the old names; overrides use the new ones.
RENAMED_KEYS = {
    "finetune.log_every": "finetune.log_every_steps",
    "finetune.sample_every": "finetune.sample_every_steps",
    "finetune.checkpoint_every": "finetune.checkpoint_every_steps",
}


def current_key(dotted: str) -> str:
    """A key's name now (a renamed key's new name; any other key unchanged)."""
    return RENAMED_KEYS.get(dotted, dotted)


def apply_dict(cfg: Config, data: dict, prefix: str = "") -> None:
    for key, value in data.items():
        full = current_key(f"{prefix}{key}")
        if isinstance(value, dict):
            target = _resolve(cfg, full)[1]
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"{full!r} is a value, not a section")
            apply_dict(cfg, value, full + ".")
        else:
            set_value(cfg, full, value)


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    parent, current, name = _resolve(cfg, dotted)
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"{dotted!r} is a section; set one of its keys: {', '.join(_field_names(current))}")
    hint = typing.get_type_hints(type(parent))[name]
    setattr(parent, name, _coerce(dotted, value, hint))


def _resolve(cfg: Config, dotted: str) -> tuple[Any, Any, str]:
    parts = dotted.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        names = _field_names(node)
        if part not in names:
            where = ".".join(parts[:i]) or "top level"
            valid = ", ".join(".".join(parts[:i] + [n]) for n in names)
            raise ConfigError(f"unknown config key {dotted!r} (no {part!r} in {where}); valid keys: {valid}")
        if i == len(parts) - 1:
            return node, getattr(node, part), part
        node = getattr(node, part)
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"{'.'.join(parts[: i + 1])!r} is a value, not a section")
    raise AssertionError("unreachable")


def _field_names(node: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's type; booleans accept only true/false/1/0."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin is tuple:
        (elem, *_rest) = typing.get_args(hint)
        if isinstance(value, str):
            value = value.strip().strip("[]()").replace(",", " ").split()
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {elem.__name__}, got {value!r}")
        return tuple(_coerce(key, v, elem) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ConfigError(f"{key}: expected a boolean (true/false/1/0), got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            try:
                if isinstance(value, str):
                    return int(value)
            except ValueError:
                pass
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {hint} for {key}")


# ----------------------------------------------------------------------------------------
# Serialisation: the same object goes beside every checkpoint and to MLflow


def to_dict(cfg: Any) -> dict:
    out = dataclasses.asdict(cfg)
    return _lists(out)


def _lists(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _lists(v) for k, v in d.items()}
    if isinstance(d, tuple):
        return [_lists(v) for v in d]
    return d


def from_dict(data: dict) -> Config:
    cfg = Config()
    apply_dict(cfg, data)
    return cfg.validate()


def flatten(cfg: Config | dict, prefix: str = "") -> dict[str, Any]:
    """`{"translator.lr": 2e-4, ...}`: the MLflow params view of a config."""
    data = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
