"""Typed configuration: one dataclass per stage, nested in one pipeline config.

A hyperparameter has exactly one default: its field here. Presets (YAML files in
`scenimefy/configs/`) and `key=value` overrides only override. Unknown keys, wrong types and
invalid choices fail with a message naming the key and the valid values.
"""

from __future__ import annotations

import dataclasses
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
# Stage sections


@dataclass
class RunConfig:
    """Where a run lives and how it is distributed."""

    name: str = "scenimefy"  # run name: a rerun with the same name resumes
    output_dir: str = "runs"  # root of run directories (local path, or s3:// / gs:// for Ray storage)
    seed: int = 0  # every random stream derives from (seed, rank, step)
    num_workers: int = 1  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker, NCCL; False: CPU, gloo
    cpus_per_worker: float = 1.0  # logical CPUs reserved per Train worker
    max_failures: int = 1  # whole-group restarts from the latest checkpoint (FailureConfig)
    mlflow_tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite under the run dir
    mlflow_experiment: str = "scenimefy"
    torch_threads: int = 0  # intra-op threads per worker; 0 = torch's default
    cpu_keep_heap: bool = (
        True  # CPU training: glibc keeps freed memory for reuse (no per-step page faults; scenimefy/stages/host.py)
    )


@dataclass
class DataConfig:
    """Datasets of stage 3 (folders or URIs that pyarrow's filesystems understand)."""

    photos: str = ""  # X: real scene photos (recursive image folder)
    anime: str = ""  # Y: real anime scenes (recursive image folder)
    pairs: str = ""  # pseudo pairs: folder with trainA/ (x^p) and trainB/ (y^p), matched by name
    load_size: int = 256  # images are bicubic-resized to load_size x load_size
    crop_size: int = 256  # then randomly cropped to crop_size (jitter when load_size > crop_size)
    flip: bool = True  # random horizontal flip of the unpaired images (independent for x and y)
    pair_flip: bool = False  # flip pseudo pairs (both images together); the authors do not
    cache_dir: str = ""  # where decoded images are cached as Parquet; empty: <run dir>/data


@dataclass
class TranslatorConfig:
    """Stage 3: semi-supervised translation (CUT-based generator, two branches)."""

    # networks (CUT defaults)
    ngf: int = 64  # generator base width
    n_blocks: int = 9  # residual blocks of G
    ndf: int = 64  # PatchGAN base width (D_U and D_P)
    n_layers_d: int = 3  # PatchGAN downsampling layers (3 = 70x70 receptive field)
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)  # encoder taps for F / F_s
    num_patches: int = 256  # patch positions per tap
    head_dim: int = 256  # width of the F / F_s MLPs
    # loss weights
    lambda_gan: float = 1.0  # L_GAN(G, D_U), unsupervised adversarial term
    lambda_gan_p: float = 1.0  # L_cGAN(G, D_P), supervised adversarial term
    lambda_style: float = 0.05  # L_StylePatchNCE (applied once; the authors' code squared it)
    lambda_src: float = 0.05  # L_SRC, semantic relation consistency
    lambda_hdce: float = 0.1  # L_hDCE, hard-negative decoupled contrastive loss
    hdce_identity: bool = True  # also apply hDCE to (y, G(y)) and average (authors' dce_idt)
    nce_tau: float = 0.07  # temperature of StylePatchNCE and hDCE
    gamma_start: float = 50.0  # hDCE hard-negative temperature at t = 0
    gamma_end: float = 10.0  # ... at t = T (the curriculum is linear in the epoch)
    gamma_curriculum: bool = True  # False: gamma_start throughout
    lambda_sup_decay: bool = True  # lambda_sup(t) = cos(pi (t-1) / 2T); False: constant 1
    # optimisation
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 10  # epochs at constant lr
    n_epochs_decay: int = 10  # epochs of linear lr decay (T = n_epochs + n_epochs_decay)
    batch_size_per_worker: int = 1
    steps_per_epoch: int = 0  # 0: max(|X|, |Y|) // global batch (the authors' epoch)
    max_steps: int = 0  # stop after this many steps (0: run all epochs); for demos and tests
    precision: str = "fp32"  # fp32 | bf16 autocast (GPU; or a CPU with bf16 instructions, AVX512-BF16/AMX)
    channels_last: bool = False  # channels_last memory format (GPU)
    compile: bool = (
        False  # torch.compile G, D_U and D_P (1.4x on an H100 at batch 16, 1.1x on a CPU; minutes of compiling first)
    )
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead (CUDA graphs, small batches) | max-autotune[-no-cudagraphs]
    init_from: str = ""  # start from these generator weights (ours or Shinkai_net_G.pth), counters at 0
    # bookkeeping
    log_every_steps: int = 10
    sample_every_steps: int = 200  # sample grid (x, G(x), x^p, G(x^p), y^p) to MLflow
    checkpoint_every_steps: int = 500  # plus one at the end of every epoch
    keep_checkpoints: int = 2


@dataclass
class TranslateConfig:
    """Inference with the translator generator."""

    batch_size: int = 4
    max_side: int = 0  # downscale so the longer side is at most this (0: keep size)
    tile: int = 0  # translate in tiles of this size (0: whole image)
    tile_overlap: int = 32  # pixels shared by neighbouring tiles, blended linearly
    memory_budget_gib: float = (
        0.0  # memory one G pass may use (0: 70 % of the device's free memory); larger images are tiled
    )
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class PriorsConfig:
    """Pretrained priors (CLIP, LPIPS-VGG, Mask2Former, Inception), resolved by `scenimefy.priors.loading`."""

    cache_dir: str = ""  # looked up first and downloaded into; empty: $SCENIMEFY_CACHE or ~/.cache/scenimefy
    offline: bool = False  # forbid downloads: a missing file is an error naming it
    clip_model: str = "ViT-B-32"  # open_clip architecture, or local-dir:DIR (open_clip_config.json + weights; Ray workers build it too)
    clip_pretrained: str = "openai"  # open_clip pretrained tag, or a path to a weights file
    lpips_net: str = "vgg"  # LPIPS trunk
    lpips_weights: str = ""  # LPIPS v0.1 linear heads (.pth); empty: the copy inside the lpips package
    vgg16_weights: str = ""  # torchvision VGG16 ImageNet weights for the LPIPS trunk; empty: cache/hub
    mask2former: str = "facebook/mask2former-swin-base-ade-semantic"  # hub id or local directory
    inception_weights: str = ""  # FID Inception (pt_inception-2015-12-05) weights; empty: cache/hub


@dataclass
class StyleGANConfig:
    """StyleGAN2 architecture shared by G_s and G_t (rosinality layout, SPEC.md stage 0)."""

    size: int = 256  # output resolution (32..1024, a power of 2)
    latent_dim: int = 512  # z and w dimension
    n_mlp: int = 8  # mapping network depth
    channel_multiplier: int = 2  # rosinality's channel_multiplier
    channel_base: int = 16384  # channels at a resolution = min(channel_max, channel_base * cm // res)
    channel_max: int = 512  # (tiny widths for tests: lower both)


@dataclass
class PretrainConfig:
    """Stage 0: StyleGAN2 on real scene photos (G_s)."""

    photos: str = ""  # real landscape photos (recursive folder or URI); empty: data.photos
    batch_size_per_worker: int = 16
    total_kimg: float = 3520.0  # training length in thousands of real images shown (220k its x 16)
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0  # lazy R1 weight on reals
    d_reg_every: int = 16  # R1 interval
    path_weight: float = 2.0  # path-length regularisation weight
    g_reg_every: int = 4  # path-length interval
    path_batch_shrink: int = 2
    path_decay: float = 0.01  # running mean decay of the path length
    mixing_prob: float = 0.9  # style mixing probability
    ema_half_life_kimg: float = 10.0  # EMA decay 0.5 ** (batch / (half_life * 1000)) per step
    flip: bool = True  # random horizontal flip of reals
    precision: str = "fp32"  # fp32 | bf16
    log_every_kimg: float = 1.0
    sample_every_kimg: float = 10.0  # fixed-seed sample grid to MLflow
    checkpoint_every_kimg: float = 50.0
    keep_checkpoints: int = 2
    init_from: str = ""  # start from a rosinality or scenimefy checkpoint (weights only)


@dataclass
class FinetuneConfig:
    """Stage 1: G_t fine-tuned from G_s on anime scenes with semantic constraints."""

    source_checkpoint: str = ""  # G_s: rosinality checkpoint (lhq-220000.pt) or ours; empty: stage 0's output
    anime: str = ""  # anime scenes (recursive folder or URI); empty: data.anime
    iterations: int = 1000
    batch_size_per_worker: int = 8
    n_trainable_blocks: int = 3  # resolution blocks trained, counted from the output end (FreezeG)
    lambda_global: float = 1.0  # weight of D_CLIP + lambda_lpips * LPIPS
    lambda_lpips: float = 0.01
    lambda_patch: float = 0.05  # weight of the CLIP patch contrastive loss L_patch
    patch_count: int = 16  # K crops per image
    patch_size: int = 64  # crop side in pixels (at 256 px)
    patch_tau: float = 1.0  # InfoNCE temperature of L_patch
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0
    d_reg_every: int = 16
    g_reg_every: int = 4  # G's lazy-regularisation Adam correction, kept from stage 0 (no path length here)
    mixing_prob: float = 0.9
    ema_half_life_kimg: float = 10.0
    flip: bool = True
    precision: str = "fp32"
    log_every_steps: int = 10
    sample_every_steps: int = 100
    checkpoint_every_steps: int = 250
    keep_checkpoints: int = 2


@dataclass
class PairsConfig:
    """Stage 2: pseudo-pair generation and segmentation-guided selection."""

    source_checkpoint: str = ""  # G_s; empty: stage 0's output
    target_checkpoint: str = ""  # G_t; empty: stage 1's output
    num_candidates: int = 0  # seeds to generate and score (0: stream until target_kept)
    target_kept: int = 30000  # stop once this many pairs are kept
    first_seed: int = 0
    truncation: float = 0.7
    mean_latent_samples: int = 4096
    share_noise: bool = True  # same per-layer noise for G_s and G_t (the authors drew it twice)
    bce_threshold: float = 5.0  # keep a pair when L_BCE < threshold ...
    min_classes: int = 2  # ... and the photo shows at least this many ADE20k classes
    batch_size: int = 16
    generator_actors: int = 1  # Ray Data actor pool size for generation
    segmenter_actors: int = 1  # ... and for Mask2Former
    gpus_per_actor: float = 1.0  # used when run.use_gpu
    precision: str = "bf16"  # Mask2Former precision on GPU (fp32 on CPU)
    generator_group: int = (
        8  # seeds per generator call, aligned to seed // group: a row's images never depend on batching
    )
    chunk_size: int = 10000  # at most this many seeds per chunk (the unit of resume; actor pools restart per chunk)
    max_candidates: int = 0  # streaming mode stops after this many candidates (0: no limit)


@dataclass
class EvaluateConfig:
    """Metrics (SPEC.md "Metrics"): FID/KID against the anime set, L_BCE photo vs translation."""

    photos: str = ""  # held-out test photos to translate and score (empty: no evaluation)
    anime: str = ""  # anime reference set for FID/KID; empty: data.anime
    size: int = 256  # both sets resized to size x size for FID/KID (the recommended protocol)
    max_images: int = 0  # score at most this many photos (0: all)
    batch_size: int = 16
    fid: bool = True  # FID and KID (Inception-v3 pool features)
    semantic: bool = True  # L_BCE between each photo and its translation (Mask2Former)
    bce_weight: float = 10.0  # tuning objective = FID + bce_weight * L_BCE
    every_epochs: int = 0  # during translator training: evaluate every N epochs (0: off)


@dataclass
class TuneConfig:
    """Ray Tune sweeps over stage 3 (`scenimefy tune`); search spaces are YAML files in tuning/."""

    name: str = "sweep"  # experiment name: rerunning a sweep with the same name resumes it (Tuner.restore)
    space: str = ""  # search-space YAML (tuning/README.md), e.g. tuning/paper.yaml
    num_samples: int = 16  # trials drawn from the space (times every grid_search combination)
    metric: str = "objective"  # fid | kid | l_bce | objective (= FID + evaluate.bce_weight * L_BCE); minimised
    grace_period: int = 2  # ASHA: epochs every trial trains before it may be stopped
    reduction_factor: float = 2.0  # ASHA: at each rung only the best 1/reduction_factor continue
    max_concurrent_trials: int = 0  # 0: as many as the cluster's GPUs (CPUs on a CPU cluster) fit
    max_failures: int = 1  # retries of a failed trial (its Train run resumes from its own checkpoint)
    manifest: str = ""  # stage-2 manifest (Parquet) that a pairs.bce_threshold dimension filters
    search_seed: int = 0  # seed of the random search


@dataclass
class PipelineConfig:
    """`scenimefy pipeline`: stages 0-3 in one driver, each stage's outputs feeding the next (scenimefy/distributed/pipeline.py)."""

    stages: tuple[
        str, ...
    ] = ()  # pretrain, finetune, pairs, train; empty: every stage whose output the config does not give


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

    def validate(self) -> "Config":
        """Cross-field checks a user can break; raise ConfigError with the fix."""
        t, d = self.translator, self.data
        if t.precision not in PRECISIONS:
            raise ConfigError(f"translator.precision={t.precision!r}: expected one of {sorted(PRECISIONS)}")
        if t.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"translator.compile_mode={t.compile_mode!r}: expected one of {sorted(COMPILE_MODES)}")
        if d.crop_size > d.load_size:
            raise ConfigError(
                f"data.crop_size={d.crop_size} exceeds data.load_size={d.load_size}: set crop_size <= load_size"
            )
        if d.crop_size % 4:
            raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of 4 (two 2x downsamplings)")
        if self.run.num_workers < 1:
            raise ConfigError(f"run.num_workers={self.run.num_workers}: need at least 1")
        if t.batch_size_per_worker < 1:
            raise ConfigError(f"translator.batch_size_per_worker={t.batch_size_per_worker}: need at least 1")
        for name, value in (
            ("pretrain", self.pretrain.precision),
            ("finetune", self.finetune.precision),
            ("pairs", self.pairs.precision),
        ):
            if value not in PRECISIONS:
                raise ConfigError(f"{name}.precision={value!r}: expected one of {sorted(PRECISIONS)}")
        if self.translate.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"translate.device={self.translate.device!r}: expected auto, cpu or cuda")
        return self


PRECISIONS = {"fp32", "bf16"}
COMPILE_MODES = {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}


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


def apply_dict(cfg: Config, data: dict, prefix: str = "") -> None:
    for key, value in data.items():
        full = f"{prefix}{key}"
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
