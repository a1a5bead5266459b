"""`scenimefy tune`: Ray Tune over the translator's loss weights and the pair-selection threshold.

Each trial is a whole stage-3 training run (`train_translator_on_ray`) with its own Ray Train
workers; Tune (2.60, Train V2) runs a *function trainable* that builds and fit()s the
TorchTrainer with `TuneReportCallback()` (RAY.md 0.2 and 4). Rank 0 scores the generator at
every epoch end (`scenimefy.evaluation.scoring.EpochEvaluator`: FID, KID, L_BCE on a held-out
subset), so Tune receives one result per epoch and ASHA stops trials on `tune.metric`
(default: objective = FID + evaluate.bce_weight * L_BCE) with `time_attr="epoch"`.

Layout of a sweep, all under `<run.output_dir>/<tune.name>/`:
    sweep.yaml             the config and the search space it started with (checked on resume)
    tune/                  the Tune experiment (Tuner.restore resumes it)
    trials/<trial run>/    each trial's run dir; trials/ray/<trial run>/ its Train checkpoints
    pairs/threshold=.../   pseudo pairs kept at a searched threshold (from the stage-2 manifest)
    cache/                 decoded photos/anime shared by every trial
    mlflow.db              one parent MLflow run <tune.name>, one child run per trial
    results.csv, best.yaml, objective_vs_params.png   written at the end (MLflow artifacts)

Rerunning a sweep with the same name resumes it: finished trials are kept, unfinished and
errored ones continue, and each continuing trial's Train run resumes from its own latest
checkpoint (its Train run name comes from the trial id).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from scenimefy.config import Config, ConfigError, dump_yaml, from_dict, set_value, to_dict
from scenimefy.data.images import atomic_path
from scenimefy.distributed.cluster import init_ray, local_path
from scenimefy.evaluation.scoring import TUNABLE_METRICS, anime_reference, held_out_photos

SWEEP_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
BEST_PRESET_FILE = "best.yaml"
PLOT_FILE = "objective_vs_params.png"
EXPERIMENT_DIR = "tune"
TIME_ATTR = "epoch"  # ASHA's clock: the epoch each result closes (robust to a trial resuming mid-sweep)
REPORT_ONLY_AT_EPOCH_ENDS = 10**9  # translator.checkpoint_every_steps of a trial: one Tune result per epoch
DRIVER_RESOURCE = "trial_driver"  # a custom resource that, when the cluster declares it, holds trial drivers
THRESHOLD_KEYS = ("pairs.bce_threshold", "pairs.min_classes")  # filters over the stage-2 manifest


# ----------------------------------------------------------------------------------------
# Search spaces (tuning/*.yaml)

# kind -> number of arguments (None: a non-empty list of values)
SPACE_KINDS: dict[str, int | None] = {
    "uniform": 2,  # [low, high]
    "loguniform": 2,  # [low, high], low > 0
    "quniform": 3,  # [low, high, q]
    "qloguniform": 3,  # [low, high, q], low > 0
    "choice": None,  # [v1, v2, ...] sampled
    "grid": None,  # [v1, v2, ...] every value (tune.grid_search), times num_samples
}
TUNABLE_SECTIONS = ("translator",)
TUNABLE_KEYS = (
    "data.load_size",
    "data.crop_size",
    "data.flip",
    "data.pair_flip",
    *THRESHOLD_KEYS,
    "evaluate.bce_weight",  # changes the objective itself: trials are then not comparable (tests only)
)


@dataclass(frozen=True)
class Dimension:
    """One searched config key: `kind` is a key of SPACE_KINDS, or "fixed" (a constant override)."""

    key: str
    kind: str
    args: tuple

    @property
    def log_scale(self) -> bool:
        return self.kind in ("loguniform", "qloguniform")

    def domain(self) -> Any:
        """The Ray Tune search domain (or the constant)."""
        from ray import tune

        a = self.args
        if self.kind == "fixed":
            return a[0]
        if self.kind == "grid":
            return tune.grid_search(list(a))
        if self.kind == "choice":
            return tune.choice(list(a))
        return {
            "uniform": tune.uniform,
            "loguniform": tune.loguniform,
            "quniform": tune.quniform,
            "qloguniform": tune.qloguniform,
        }[self.kind](*a)

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}" if self.kind != "fixed" else repr(self.args[0])


def _is_tunable(key: str) -> bool:
    return key.split(".", 1)[0] in TUNABLE_SECTIONS or key in TUNABLE_KEYS


def parse_space(data: Any, source: str = "search space") -> list[Dimension]:
    """`{config.key: {kind: [args]} | constant}` -> dimensions; every error names the key and the fix."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{source}: expected a mapping of config keys to {{kind: [args]}}, e.g. "
            "'translator.lambda_src: {loguniform: [0.01, 0.2]}'"
        )
    dims = []
    for key, spec in data.items():
        if isinstance(spec, list):
            raise ConfigError(f"{source}: {key}: a list needs a kind, e.g. {{choice: {spec}}} or {{grid: {spec}}}")
        scratch = Config()
        try:
            set_value(scratch, key, _sample_value(spec))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        if not _is_tunable(key):
            raise ConfigError(
                f"{source}: {key!r} cannot be searched by a translator sweep; searchable keys: translator.*, "
                f"{', '.join(TUNABLE_KEYS)}"
            )
        dims.append(_dimension(key, spec, source, scratch))
    return dims


def _sample_value(spec: Any) -> Any:
    """A value of the dimension (to type-check it against the config field)."""
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, args),) = spec.items()
        if isinstance(args, list) and args:
            return args[0]
    return spec


def _dimension(key: str, spec: Any, source: str, scratch: Config) -> Dimension:
    if not isinstance(spec, dict):
        return Dimension(key, "fixed", (spec,))
    if len(spec) != 1:
        raise ConfigError(f"{source}: {key}: expected one kind ({', '.join(SPACE_KINDS)}), got {sorted(spec)}")
    ((kind, args),) = spec.items()
    if kind not in SPACE_KINDS:
        raise ConfigError(f"{source}: {key}: unknown kind {kind!r}; valid kinds: {', '.join(SPACE_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{source}: {key}: {kind} needs a list of arguments, e.g. {{{kind}: [...]}}")
    n = SPACE_KINDS[kind]
    if n is None:
        for value in args:  # every value must fit the field
            set_value(scratch, key, value)
        return Dimension(key, kind, tuple(args))
    if len(args) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
        names = "[low, high]" if n == 2 else "[low, high, q]"
        raise ConfigError(f"{source}: {key}: {kind} takes {n} numbers {names}, got {args}")
    low, high = float(args[0]), float(args[1])
    if not low < high:
        raise ConfigError(f"{source}: {key}: {kind} needs low < high, got {args}")
    if kind in ("loguniform", "qloguniform") and low <= 0:
        raise ConfigError(f"{source}: {key}: {kind} needs low > 0, got {args}")
    if n == 3 and not float(args[2]) > 0:
        raise ConfigError(f"{source}: {key}: {kind} needs q > 0, got {args}")
    set_value(scratch, key, high)  # an int field must get integer bounds
    return Dimension(key, kind, tuple(float(v) for v in args))


def load_space(path: str) -> list[Dimension]:
    if not path:
        raise ConfigError("no search space: set tune.space=tuning/paper.yaml (or --space FILE); see tuning/README.md")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"tune.space={path!r}: no such file (search spaces live in tuning/*.yaml)")
    return parse_space(yaml.safe_load(file.read_text()), source=str(path))


def space_to_dict(dims: Sequence[Dimension]) -> dict:
    return {d.key: d.args[0] if d.kind == "fixed" else {d.kind: list(d.args)} for d in dims}


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
    CPUs per trial), the spare CPU left to Ray Data (RAY.md 0.4). tune.max_concurrent_trials
    lowers it further. Trial drivers take 1 CPU each unless the cluster declares the custom
    resource `trial_driver` (RAY.md 4), which then holds them instead.
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
            f"run.output_dir={cfg.run.output_dir!r}: a sweep needs a filesystem path (shared, e.g. NFS, on a multi-node "
            "cluster) for its pairs, cache and results"
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
    from scenimefy.stages.pairs import describe_scores, read_manifest

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
    base.translator.checkpoint_every_steps = REPORT_ONLY_AT_EPOCH_ENDS
    return base.validate()


def apply_trial_params(base: dict, params: dict[str, Any]) -> Config:
    cfg = from_dict(base)
    for key, value in params.items():
        set_value(cfg, key, value)
    return cfg


# ----------------------------------------------------------------------------------------
# Pairs at a searched threshold (a filter over stage 2's stored scores, never a new segmentation)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by trials on one filesystem (two trials may draw the same threshold)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def selected_pairs(manifest: str, *, threshold: float, min_classes: int, cache_root: Path) -> str:
    """The pairs folder (trainA/, trainB/) kept at (threshold, min_classes), built once per value."""
    from scenimefy.stages.pairs import materialize_selection

    folder = cache_root / f"threshold={threshold:.6g}-min_classes={min_classes}"
    marker = folder / "_selected.yaml"
    with _file_lock(cache_root / f".{folder.name}.lock"):
        if not marker.is_file():
            selection = materialize_selection(
                manifest, threshold=threshold, min_classes=min_classes, out_dir=str(folder)
            )
            summary = {k: v for k, v in selection.items() if k != "seeds"}
            with atomic_path(marker) as tmp:
                Path(tmp).write_text(yaml.safe_dump({"manifest": manifest, **summary}, sort_keys=False))
    return str(folder)


# ----------------------------------------------------------------------------------------
# The trial: one Ray Train run, inside the Tune trial actor


def run_trial(config: dict, *, base: dict, sweep: dict) -> None:
    """Function trainable: the searched values over the base config, then fit() the translator.

    The Train run is named `<tune.name>-<trial id>`: a restored trial's TorchTrainer resumes
    from that run's latest checkpoint (RAY.md 0.8). Metrics reach Tune via TuneReportCallback.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from scenimefy.distributed.translator import train_translator_on_ray

    cfg = apply_trial_params(base, config)
    cfg.run.name = f"{sweep['name']}-{tune.get_context().get_trial_id()}"
    if set(config) & set(THRESHOLD_KEYS):
        cfg.data.pairs = selected_pairs(
            cfg.tune.manifest,
            threshold=cfg.pairs.bce_threshold,
            min_classes=cfg.pairs.min_classes,
            cache_root=Path(sweep["dir"]) / "pairs",
        )
    cfg.validate()
    train_translator_on_ray(cfg, callbacks=[TuneReportCallback()], parent_run_id=sweep["parent_run_id"])


# ----------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepOutcome:
    sweep_dir: str
    experiment_path: str
    results_csv: str
    best_preset: str
    plot: str
    best: dict  # the chosen row of the results table
    table: list[dict]
    plan: TrialPlan
    tracking_uri: str
    parent_run_id: str
    resumed: bool


def _check_or_save_spec(sweep_dir: Path, cfg: Config, dims: Sequence[Dimension]) -> None:
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


def check_state_api() -> None:
    """ASHA frees a stopped trial's Train placement group only through the State API (RAY.md 0.3).

    Probed from a Ray task, where Train's PlacementGroupCleaner runs: it finds the dashboard
    through RAY_API_SERVER_ADDRESS / RAY_ADDRESS or, failing those, the only Ray instance on
    the machine. Without it the first early stop leaks that trial's resources and the sweep
    hangs (ray-project/ray#54305), so the sweep refuses to start.
    """
    import ray

    @ray.remote(num_cpus=0)
    def probe() -> None:
        from ray.util.state import list_actors

        list_actors(limit=1, raise_on_missing_output=False)

    try:
        ray.get(probe.remote(), timeout=120)
    except Exception as e:  # noqa: BLE001 - any failure means no State API for the cleaner
        cause = getattr(e, "cause", None) or e
        reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
        fix = (
            "another Ray instance runs on this machine: set RAY_API_SERVER_ADDRESS=http://127.0.0.1:<dashboard port> "
            "before Ray starts, or stop the other instance"
            if "multiple active Ray instances" in str(cause)
            else "install ray[default] and start the cluster with its dashboard"
        )
        raise ValueError(
            "Ray's State API is not reachable from the workers, so trials stopped early would keep their Train "
            f"workers' resources and the sweep would hang (ray-project/ray#54305); {fix} ({reason})"
        ) from None


def _warm_caches(base: Config, searched: set[str]) -> None:
    """Decode photos/anime (and fixed pairs) once, on the driver, before trials race for the cache."""
    from scenimefy.distributed.data import prepare_images, prepare_pairs

    size, cache = base.data.load_size, base.data.cache_dir
    prepare_images(base.data.photos, size=size, cache_dir=cache, what="photos")
    prepare_images(base.data.anime, size=size, cache_dir=cache, what="anime")
    if not searched & set(THRESHOLD_KEYS):
        prepare_pairs(base.data.pairs, size=size, cache_dir=cache)


def _cluster_resources_without_starting(num_cpus_needed: float) -> dict[str, float]:
    """The running cluster's resources, or those `init_ray` would give a local one (dry runs)."""
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        init_ray(num_cpus_needed=num_cpus_needed)
        return ray.cluster_resources()
    import torch

    return {
        "CPU": float(max(os.cpu_count() or 1, int(num_cpus_needed + 0.999) + 1)),
        "GPU": float(torch.cuda.device_count()),
    }


def run_sweep(cfg: Config, *, callbacks: Sequence[Any] = (), dry_run: bool = False) -> SweepOutcome | dict:
    """Start (or resume) the sweep `tune.name`; returns what it wrote. dry_run: the plan only."""
    dims = load_space(cfg.tune.space)
    check_sweep_config(cfg, dims)
    sweep_dir = sweep_dir_of(cfg)
    from scenimefy.distributed.tracking import find_or_create_run, resolve_tracking_uri

    tracking_uri = (
        resolve_tracking_uri(cfg.run.mlflow_tracking_uri, sweep_dir) if not dry_run else cfg.run.mlflow_tracking_uri
    )
    base = trial_base_config(cfg, sweep_dir, tracking_uri)
    searched = {d.key for d in dims}
    if not searched & set(THRESHOLD_KEYS):
        from scenimefy.distributed.translator import check_data_folders

        check_data_folders(base)

    # The cluster: one trial must fit, and the dashboard must run (ASHA).
    total_epochs = base.translator.n_epochs + base.translator.n_epochs_decay
    experiment_path = sweep_dir / EXPERIMENT_DIR
    needed_cpus = base.run.num_workers * base.run.cpus_per_worker + 2
    if dry_run:
        plan = plan_trials(base, _cluster_resources_without_starting(needed_cpus))
        return {
            "sweep_dir": str(sweep_dir),
            "experiment": str(experiment_path),
            "resumes": experiment_path.exists(),
            "space": space_to_dict(dims),
            "plan": dataclasses.asdict(plan),
            "epochs_per_trial": total_epochs,
            "asha": {
                "time_attr": TIME_ATTR,
                "max_t": total_epochs,
                "grace_period": cfg.tune.grace_period,
                "reduction_factor": cfg.tune.reduction_factor,
                "metric": cfg.tune.metric,
            },
        }
    init_ray(num_cpus_needed=needed_cpus)  # with the dashboard: ASHA's stops free resources through it
    import ray

    plan = plan_trials(base, ray.cluster_resources())
    check_state_api()
    _check_or_save_spec(sweep_dir, cfg, dims)

    # MLflow: one parent run for the sweep (found again on resume), trials are its children.
    params = {f"tune.{k}": v for k, v in dataclasses.asdict(cfg.tune).items()}
    params.update({f"space.{d.key}": d.describe() for d in dims})
    params.update({"plan.max_concurrent_trials": plan.max_concurrent, "plan.gpus_per_trial": plan.gpus_per_trial})
    parent_run_id = find_or_create_run(tracking_uri, cfg.run.mlflow_experiment, cfg.tune.name, params)
    _warm_caches(base, searched)

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    sweep_info = {"name": cfg.tune.name, "dir": str(sweep_dir), "parent_run_id": parent_run_id}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=to_dict(base), sweep=sweep_info), plan.driver_resources
    )
    resumed = tune.Tuner.can_restore(str(experiment_path))
    if resumed:
        print(f"[tune] resuming the sweep in {experiment_path}", flush=True)
        tuner = tune.Tuner.restore(
            str(experiment_path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        print(
            f"[tune] {cfg.tune.num_samples} sample(s) over {', '.join(d.key for d in dims)}; up to {plan.max_concurrent} "
            f"trial(s) at once, {plan.gpus_per_trial} GPU(s) and {plan.cpus_per_trial:g} CPU(s) each; "
            f"ASHA on {cfg.tune.metric} over {total_epochs} epochs",
            flush=True,
        )
        tuner = tune.Tuner(
            trainable,
            param_space={d.key: d.domain() for d in dims},
            tune_config=tune.TuneConfig(
                metric=cfg.tune.metric,
                mode="min",
                num_samples=cfg.tune.num_samples,
                scheduler=ASHAScheduler(
                    time_attr=TIME_ATTR,
                    max_t=total_epochs,
                    grace_period=cfg.tune.grace_period,
                    reduction_factor=cfg.tune.reduction_factor,
                    # a trial that reaches max_t finishes on its own: stopping it at its last report
                    # would kill it before it writes generator.pt and closes its MLflow run
                    stop_last_trials=False,
                ),
                # BasicVariantGenerator ignores TuneConfig.max_concurrent_trials (Tune warns): cap it here
                search_alg=tune.search.BasicVariantGenerator(
                    random_state=cfg.tune.search_seed, max_concurrent=plan.max_concurrent
                ),
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT_DIR,
                storage_path=str(sweep_dir),
                failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
                callbacks=list(callbacks),
                verbose=1,
            ),
        )
    results = tuner.fit()

    # Results: the table, the best trial as a preset, the plot; all to the parent MLflow run.
    table = results_table(
        results, dims, metric=cfg.tune.metric, total_epochs=total_epochs,
        run_dir_of_trial=lambda trial_id: Path(base.run.output_dir) / f"{cfg.tune.name}-{trial_id}",
    )  # fmt: skip
    results_csv = write_results_csv(table, sweep_dir / RESULTS_FILE)
    try:
        best = choose_best(table, metric=cfg.tune.metric, total_epochs=total_epochs)
    except RuntimeError:
        from scenimefy.distributed.tracking import MlflowTracker

        parent = MlflowTracker(tracking_uri, parent_run_id)
        parent.log_artifact(results_csv)
        parent.finish("FAILED")
        raise
    best_preset = write_best_preset(cfg, best, dims, sweep_dir / BEST_PRESET_FILE, sweep_dir=sweep_dir)
    plot = plot_objective(table, dims, metric=cfg.tune.metric, path=sweep_dir / PLOT_FILE)
    _finish_mlflow(
        tracking_uri,
        parent_run_id,
        table,
        best,
        cfg.tune.metric,
        [results_csv, best_preset, plot, str(sweep_dir / SWEEP_FILE)],
    )
    return SweepOutcome(
        str(sweep_dir),
        str(experiment_path),
        results_csv,
        best_preset,
        plot,
        best,
        table,
        plan,
        tracking_uri,
        parent_run_id,
        resumed,
    )


# ----------------------------------------------------------------------------------------
# After the sweep


def results_table(
    results: Any, dims: Sequence[Dimension], *, metric: str, total_epochs: int, run_dir_of_trial: Any = None
) -> list[dict]:
    """One row per trial: its searched values, last metrics, best metric, epochs, status.

    run_dir_of_trial(trial_id) -> the trial's run directory (for its final generator.pt).
    """
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        history = result.metrics_dataframe
        trial_id = metrics.get("trial_id") or Path(result.path).name
        epochs = int(metrics.get(TIME_ATTR, 0) or 0)
        row: dict[str, Any] = {"trial_id": trial_id}
        for d in dims:
            row[d.key] = (result.config or {}).get(d.key)
        for key in ("fid", "kid", "l_bce", "pixel_agreement", "objective"):
            row[key] = float(metrics[key]) if key in metrics else math.nan
        if history is not None and metric in getattr(history, "columns", ()):
            row[f"best_{metric}"] = float(np.nanmin(history[metric].to_numpy(dtype=float)))
        else:
            row[f"best_{metric}"] = math.nan
        row["epochs"] = epochs
        row["status"] = (
            "ERROR" if result.error is not None else ("STOPPED_EARLY" if epochs < total_epochs else "COMPLETED")
        )
        row["error"] = str(result.error).strip().splitlines()[-1][:300] if result.error is not None else ""
        row["checkpoint_path"] = metrics.get("checkpoint_path", "")
        generator = Path(run_dir_of_trial(trial_id)) / "generator.pt" if run_dir_of_trial else None
        row["generator"] = str(generator) if generator is not None and generator.is_file() else ""
        row["trial_dir"] = str(result.path)
        rows.append(row)
    rows.sort(key=lambda r: r["trial_id"])
    return rows


def choose_best(table: Sequence[dict], *, metric: str, total_epochs: int) -> dict:
    """Lowest final `metric` among trials that trained every epoch (else among all that reported)."""
    scored = [r for r in table if math.isfinite(r.get(metric, math.nan))]
    if not scored:
        raise RuntimeError(
            f"no trial reported {metric}; see the errors in the results table "
            + "; ".join(f"{r['trial_id']}: {r['error']}" for r in table if r["error"])[:1000]
        )
    complete = [r for r in scored if r["status"] == "COMPLETED"]
    return min(complete or scored, key=lambda r: r[metric])


def write_results_csv(table: Sequence[dict], path: Path) -> str:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(list(table)).to_csv(tmp, index=False)
    return str(path)


def write_best_preset(cfg: Config, best: dict, dims: Sequence[Dimension], path: Path, *, sweep_dir: Path) -> str:
    """The sweep's config with the best trial's values: `scenimefy train --config <path>`."""
    preset = copy.deepcopy(cfg)
    values = {d.key: best[d.key] for d in dims if best.get(d.key) is not None}
    for key, value in values.items():
        set_value(preset, key, value)
    if set(values) & set(THRESHOLD_KEYS):
        preset.data.pairs = str(
            sweep_dir / "pairs" / f"threshold={preset.pairs.bce_threshold:.6g}-min_classes={preset.pairs.min_classes}"
        )
    preset.run.name = f"{cfg.tune.name}-best"
    preset.validate()
    header = [
        f"# Best trial of sweep {cfg.tune.name!r} ({best['trial_id']}): {cfg.tune.metric} = {best[cfg.tune.metric]:.6g}",
        f"# after {best['epochs']} epoch(s); fid {best['fid']:.6g}, l_bce {best['l_bce']:.6g}",
        *[f"#   {k} = {v!r}" for k, v in values.items()],
        f"# Train it: scenimefy train --config {path}",
    ]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(header) + "\n" + dump_yaml(preset))
    return str(path)


def plot_objective(table: Sequence[dict], dims: Sequence[Dimension], *, metric: str, path: Path) -> str:
    """One panel per searched dimension: the trial's final metric against its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    searched = [d for d in dims if d.kind != "fixed"] or list(dims)
    fig, axes = plt.subplots(1, len(searched), figsize=(4 * len(searched), 3.4), squeeze=False)
    best = min((r for r in table if math.isfinite(r.get(metric, math.nan))), key=lambda r: r[metric], default=None)
    styles = {"COMPLETED": ("o", "tab:blue"), "STOPPED_EARLY": ("x", "tab:orange"), "ERROR": ("s", "tab:red")}
    for ax, d in zip(axes[0], searched):
        for status, (marker, colour) in styles.items():
            pts = [(r[d.key], r[metric]) for r in table if r["status"] == status and _is_number(r.get(d.key))]
            pts = [(x, y) for x, y in pts if math.isfinite(y)]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color=colour, label=status.lower().replace("_", " "))
        if best is not None and _is_number(best.get(d.key)):
            ax.scatter([best[d.key]], [best[metric]], s=160, facecolors="none", edgecolors="black", label="best")
        if d.log_scale:
            ax.set_xscale("log")
        ax.set_xlabel(d.key)
        ax.set_ylabel(f"{metric} (last epoch)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return str(path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _finish_mlflow(
    tracking_uri: str, parent_run_id: str, table: Sequence[dict], best: dict, metric: str, artifacts: list[str]
) -> None:
    """Artifacts and best values on the parent run; trials stopped by ASHA closed as KILLED."""
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.tracking import MlflowTracker

    client = MlflowClient(tracking_uri)
    parent = MlflowTracker(tracking_uri, parent_run_id)
    parent.log_metrics(
        {f"best_{k}": best[k] for k in ("objective", "fid", "kid", "l_bce") if math.isfinite(best.get(k, math.nan))},
        step=0,
    )
    client.set_tag(parent_run_id, "best_trial", best["trial_id"])
    counts = {s: sum(r["status"] == s for r in table) for s in ("COMPLETED", "STOPPED_EARLY", "ERROR")}
    parent.log_metrics({f"trials_{k.lower()}": float(v) for k, v in counts.items()}, step=0)
    for path in artifacts:
        parent.log_artifact(path)
    children = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    status_of = {r["trial_id"]: r["status"] for r in table}
    for child in children:
        name = child.data.tags.get("mlflow.runName", "")
        status = next((s for tid, s in status_of.items() if name.endswith(tid)), None)
        if status is None:
            continue
        client.set_tag(child.info.run_id, "tune.status", status)
        # A Train run that Tune stopped either never closes its own MLflow run or, when the stop
        # interrupts fit() in time, closes it as FAILED (a race): either way it was stopped.
        if child.info.status == "RUNNING" or (status == "STOPPED_EARLY" and child.info.status != "KILLED"):
            closed = {"STOPPED_EARLY": "KILLED", "ERROR": "FAILED", "COMPLETED": "FINISHED"}[status]
            client.set_terminated(child.info.run_id, status=closed)
    parent.finish("FINISHED")
