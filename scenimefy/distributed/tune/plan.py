"""What a sweep is before any trial runs: its checks, the resources per trial, the trials' base config.

Pure: no Ray, no MLflow (the cluster's resources come in as a dict).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scenimefy.config import Config, ConfigError, to_dict
from scenimefy.data.images import atomic_path
from scenimefy.distributed.cluster import local_path
from scenimefy.distributed.tune.space import THRESHOLD_KEYS, Dimension, space_to_dict
from scenimefy.evaluation.scoring import TUNABLE_METRICS, anime_reference, held_out_photos

SWEEP_FILE = "sweep.yaml"
TIME_ATTR = "epoch"  # ASHA's clock: the epoch each result closes (robust to a trial resuming mid-sweep)
DRIVER_RESOURCE = "trial_driver"  # a custom resource that, when the cluster declares it, holds trial drivers


# ----------------------------------------------------------------------------------------
# Resources: what one trial needs, and how many fit at once


@dataclass
class TrialPlan:
    gpus_per_trial: int  # one per Train worker when run.use_gpu
    cpus_per_trial: float  # Train workers, plus the trial driver unless it runs on DRIVER_RESOURCE
    driver_resources: dict[str, float]  # what the Tune trial (the driver fit()ing the TorchTrainer) reserves
    max_concurrent: int
    cluster_gpus: float
    cluster_cpus: float


def plan_trials(cfg: Config, cluster: dict[str, float]) -> TrialPlan:
    """Resources per trial and the concurrency the cluster allows; ValueError if one trial cannot fit.

    GPU sweeps: floor(GPUs / GPUs per trial) trials at once. CPU sweeps: floor((CPUs - 1) /
    CPUs per trial), the spare CPU left to Ray Data. tune.max_concurrent_trials lowers it
    further. Trial drivers take 1 CPU each unless the cluster declares the custom resource
    `trial_driver`, which then holds them instead (docs/ray.md).
    """
    run = cfg.run
    gpus_total, cpus_total = float(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    gpus = run.num_workers if run.use_gpu else 0
    on_driver_resource = cluster.get(DRIVER_RESOURCE, 0) >= 1
    driver = {DRIVER_RESOURCE: 1.0} if on_driver_resource else {"CPU": 1.0}
    cpus = run.num_workers * run.cpus_per_worker + (0.0 if on_driver_resource else 1.0)
    if gpus > gpus_total:
        raise ValueError(
            f"each trial asks for {gpus} GPU(s) (run.num_workers={run.num_workers}, one GPU per worker) but the "
            f"cluster has {gpus_total:g}: lower run.num_workers, set run.use_gpu=false, or add GPU nodes"
        )
    if cpus > cpus_total:
        raise ValueError(
            f"each trial asks for {cpus:g} CPU(s) (run.num_workers={run.num_workers} x run.cpus_per_worker="
            f"{run.cpus_per_worker:g}"
            + ("" if on_driver_resource else " + 1 for the trial driver")
            + f") but the cluster has {cpus_total:g}: lower run.cpus_per_worker or run.num_workers"
        )
    if gpus:
        fit = int(gpus_total // gpus)
    else:
        fit = max(1, int((cpus_total - 1) // cpus)) if cpus else 1
    if on_driver_resource:
        fit = min(fit, int(cluster[DRIVER_RESOURCE]))
    if cfg.tune.max_concurrent_trials < 0:
        raise ValueError(f"tune.max_concurrent_trials={cfg.tune.max_concurrent_trials}: expected >= 0 (0 = derived)")
    if cfg.tune.max_concurrent_trials:
        fit = min(fit, cfg.tune.max_concurrent_trials)
    return TrialPlan(gpus, cpus, driver, max(1, fit), gpus_total, cpus_total)


# ----------------------------------------------------------------------------------------
# Sweep configuration


def sweep_dir_of(cfg: Config) -> Path:
    return Path(local_path(cfg.run.output_dir)) / cfg.tune.name


def check_sweep_config(cfg: Config, dims: Sequence[Dimension]) -> None:
    """Everything a user can get wrong before any trial starts; ValueError/ConfigError with the fix."""
    t, ev = cfg.tune, cfg.evaluate
    if "://" in cfg.run.output_dir:
        raise ValueError(
            f"run.output_dir={cfg.run.output_dir!r}: a sweep needs a filesystem path (shared, e.g. NFS, on a "
            "multi-node cluster) for its pairs, cache and results"
        )
    if t.metric not in TUNABLE_METRICS:
        raise ConfigError(f"tune.metric={t.metric!r}: expected one of {', '.join(TUNABLE_METRICS)}")
    if t.metric in ("fid", "kid") and not ev.fid:
        raise ConfigError(f"tune.metric={t.metric} needs evaluate.fid=true")
    if t.metric == "l_bce" and not ev.semantic:
        raise ConfigError("tune.metric=l_bce needs evaluate.semantic=true")
    if not (ev.fid or ev.semantic):
        raise ConfigError("a sweep needs a metric: set evaluate.fid=true and/or evaluate.semantic=true")
    if t.num_samples < 1:
        raise ConfigError(f"tune.num_samples={t.num_samples}: expected >= 1")
    if t.grace_period < 1:
        raise ConfigError(f"tune.grace_period={t.grace_period}: expected >= 1 epoch")
    if not t.reduction_factor > 1:
        raise ConfigError(f"tune.reduction_factor={t.reduction_factor}: expected > 1")
    total = cfg.translator.n_epochs + cfg.translator.n_epochs_decay
    if t.grace_period > total:
        raise ConfigError(
            f"tune.grace_period={t.grace_period} exceeds the {total} epochs of a trial "
            "(translator.n_epochs + translator.n_epochs_decay)"
        )
    if ev.every_epochs > 1:
        raise ConfigError(
            f"evaluate.every_epochs={ev.every_epochs}: a sweep scores every epoch (each Tune result must carry "
            f"tune.metric); set evaluate.every_epochs=1 or 0"
        )
    if cfg.translator.max_steps:
        raise ConfigError(
            "translator.max_steps cuts trials short of an epoch end; set translator.max_steps=0 for a sweep"
        )
    searched = {d.key for d in dims}
    if searched & set(THRESHOLD_KEYS):
        if not t.manifest:
            raise ConfigError(
                "the space searches the pair-selection threshold: set tune.manifest=PATH to stage 2's manifest "
                "(Parquet with the L_BCE of every candidate pair)"
            )
        if not Path(t.manifest).exists():
            raise ValueError(f"tune.manifest={t.manifest!r} does not exist")
        _check_threshold_range(cfg, dims)
    elif not cfg.data.pairs:
        raise ConfigError("no pseudo pairs: set data.pairs=DIR, or search pairs.bce_threshold with tune.manifest=PATH")
    held_out_photos(ev)  # held-out photos must exist: the metric comes from them
    if ev.fid:
        anime_reference(cfg)


def _bounds(cfg: Config, dims: Sequence[Dimension], key: str) -> tuple[float, float]:
    """Smallest and largest value the space can give `key` (the config's value if not searched)."""
    for d in dims:
        if d.key == key:
            values = [float(v) for v in (d.args if d.kind in ("choice", "grid", "fixed") else d.args[:2])]
            return min(values), max(values)
    section, name = key.split(".")
    value = float(getattr(getattr(cfg, section), name))
    return value, value


def _check_threshold_range(cfg: Config, dims: Sequence[Dimension]) -> None:
    """Refuse a threshold range that keeps no stored pair at all; warn if its low end keeps none."""
    from scenimefy.stages.pair_manifest import describe_scores, read_manifest

    manifest, _ = read_manifest(cfg.tune.manifest)
    low_t, high_t = _bounds(cfg, dims, "pairs.bce_threshold")
    low_c, _ = _bounds(cfg, dims, "pairs.min_classes")
    l_bce = manifest["l_bce"].to_numpy(np.float64)
    rich = manifest["n_classes"].to_numpy(np.int64) >= low_c
    if not ((l_bce < high_t) & rich).any():
        raise ValueError(
            f"no stored pair has L_BCE < {high_t} (the space's highest pairs.bce_threshold) with at least {low_c:g} "
            f"classes: {describe_scores(manifest)}; move the threshold range into the scores"
        )
    if not ((l_bce < low_t) & rich).any():
        print(
            f"[tune] warning: thresholds near {low_t} keep no stored pair (lowest L_BCE {l_bce.min():.4f}); "
            "trials drawing them fail at once",
            flush=True,
        )


def _absolute(value: str) -> str:
    return local_path(value) if value and "://" not in value else value


def _absolute_if_exists(value: str) -> str:
    return str(Path(value).expanduser().absolute()) if value and Path(value).expanduser().exists() else value


def trial_base_config(cfg: Config, sweep_dir: Path, tracking_uri: str) -> Config:
    """The config every trial starts from: absolute paths (Tune and Train change the working
    directory), one evaluation and one Tune result per epoch, shared cache and MLflow store."""
    base = copy.deepcopy(cfg)
    for section, keys in (
        ("data", ("photos", "anime", "pairs", "cache_dir")),
        ("evaluate", ("photos", "anime")),
        ("tune", ("manifest", "space")),
    ):
        for key in keys:
            obj = getattr(base, section)
            setattr(obj, key, _absolute(getattr(obj, key)))
    base.translator.init_from = _absolute_if_exists(base.translator.init_from)
    for key in ("cache_dir", "clip_pretrained", "lpips_weights", "vgg16_weights", "mask2former", "inception_weights"):
        setattr(base.priors, key, _absolute_if_exists(getattr(base.priors, key)))
    base.run.output_dir = str(sweep_dir / "trials")
    base.run.mlflow_tracking_uri = tracking_uri
    base.data.cache_dir = base.data.cache_dir or str(sweep_dir / "cache")
    base.evaluate.every_epochs = 1
    return base.validate()


def check_or_save_spec(sweep_dir: Path, cfg: Config, dims: Sequence[Dimension]) -> None:
    """sweep.yaml pins the settings of a sweep: resuming with other settings is an error."""
    spec = {"config": to_dict(cfg), "space": space_to_dict(dims)}
    path = sweep_dir / SWEEP_FILE
    if path.is_file():
        saved = yaml.safe_load(path.read_text()) or {}
        if saved != yaml.safe_load(yaml.safe_dump(spec)):
            differ = [k.removeprefix("config.") for k in _differing_keys(saved, yaml.safe_load(yaml.safe_dump(spec)))]
            raise ValueError(
                f"sweep {cfg.tune.name!r} already exists in {sweep_dir} with other settings ({', '.join(differ[:8])}); "
                "rerun it with the same config and space to resume it, or choose another tune.name"
            )
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(spec, sort_keys=False))


def _differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
