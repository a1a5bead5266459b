"""Stages 0 and 1 on Ray Train: StyleGAN2 pretraining and semantic-constrained fine-tuning.

Each stage prepares its image folder with Ray Data (Parquet cache at ``stylegan.size``), checks
the batch against the data before any worker starts, then runs `train_pretrain` /
`train_finetune` on N DDP workers. A stage's Ray run is ``<run.name>-pretrain`` /
``<run.name>-finetune`` under the run's storage path (a rerun with the same name resumes), with
one MLflow run of the same name. The final rosinality-format snapshot is copied to
``<output_dir>/<run.name>/<stage>/stylegan.pt``; fine-tuning reads the pretraining one when
``finetune.source_checkpoint`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from scenimefy.config import Config, dump_yaml, flatten, from_dict, to_dict
from scenimefy.distributed.cluster import (
    copy_atomic,
    fit_or_fail,
    init_ray,
    local_path,
    ray_worker_context,
    run_dir_of,
    storage_path_of,
    torch_trainer,
)
from scenimefy.distributed.data import (
    PreparedSet,
    ShardSource,
    check_resume_workers,
    list_images,
    prepare_images,
    training_dataset,
)
from scenimefy.distributed.tracking import MlflowTracker, find_or_create_run, resolve_tracking_uri
from scenimefy.losses.clip_losses import random_patch_corners
from scenimefy.stages.checkpoint import STYLEGAN_SNAPSHOT_FILE, load_state
from scenimefy.stages.context import WorkerContext
from scenimefy.stages.stylegan import (
    check_batch_size,
    load_source_checkpoint,
    resolve_snapshot_path,
    source_networks,
)

PRETRAIN, FINETUNE = "pretrain", "finetune"


@dataclass
class StyleGANOutcome:
    run_dir: str
    snapshot: str  # the final rosinality-format stylegan.pt (g, d, g_ema, optimisers, args)
    checkpoint: str  # the latest training checkpoint (Ray storage)
    step: int
    num_images_seen: int
    mlflow_run_id: str
    tracking_uri: str
    resumed_from_step: int | None = None
    rank_checksums: tuple[float, ...] = ()  # one per worker: equal when DDP kept them identical


# ----------------------------------------------------------------------------------------
# Names and paths of a stage


def stage_run_name(cfg: Config, stage: str) -> str:
    """Ray Train run name and MLflow run name of a StyleGAN stage."""
    return f"{cfg.run.name}-{stage}"


def snapshot_path_of(cfg: Config, stage: str) -> Path:
    """Where a finished stage leaves its rosinality-format snapshot (G_s or G_t in ``g_ema``)."""
    return run_dir_of(cfg) / stage / STYLEGAN_SNAPSHOT_FILE


def finetune_source_of(cfg: Config) -> Path:
    """``finetune.source_checkpoint`` (file or checkpoint dir), else this run's pretraining snapshot."""
    if cfg.finetune.source_checkpoint:
        path = resolve_snapshot_path(local_path(cfg.finetune.source_checkpoint))
        if not path.is_file():
            raise ValueError(f"finetune.source_checkpoint={cfg.finetune.source_checkpoint!r}: no such file")
        return path
    path = snapshot_path_of(cfg, PRETRAIN)
    if not path.is_file():
        raise ValueError(
            f"no source generator: finetune.source_checkpoint is empty and {path} does not exist. "
            "Set finetune.source_checkpoint=lhq-220000.pt (or any stage-0 stylegan.pt), "
            "or run `scenimefy pretrain` first"
        )
    return path


def photos_of(cfg: Config) -> str:
    return cfg.pretrain.photos or cfg.data.photos


def anime_of(cfg: Config) -> str:
    return cfg.finetune.anime or cfg.data.anime


def _cache_dir(cfg: Config) -> str:
    return local_path(cfg.data.cache_dir) if cfg.data.cache_dir else str(Path(local_path(cfg.run.output_dir)) / "cache")


# ----------------------------------------------------------------------------------------
# Checks a user can fail, before any worker starts


def check_enough_images(
    num_images: int, *, what: str, batch_key: str, batch_size_per_worker: int, workers: int
) -> None:
    """Every worker's shard must hold at least one per-worker batch (global batch = batch x workers)."""
    per_worker = num_images // workers
    if per_worker < batch_size_per_worker:
        raise ValueError(
            f"{what}: {num_images} usable image(s) give each of {workers} worker(s) {per_worker}, fewer than "
            f"{batch_key}={batch_size_per_worker} (global batch {batch_size_per_worker * workers}); "
            "add images or lower the batch / run.num_workers"
        )


def check_priors(cfg: Config) -> None:
    """Resolve CLIP and LPIPS on the driver: offline, a missing file fails here with its name
    (PriorNotAvailable); online, it is downloaded once into the cache the workers read."""
    from scenimefy.priors.loading import resolve_clip_weights, resolve_lpips_heads, resolve_vgg16_weights

    f = cfg.finetune
    if f.lambda_global > 0 or f.lambda_patch > 0:
        resolve_clip_weights(cfg.priors)
    if f.lambda_global > 0 and f.lambda_lpips > 0:
        resolve_lpips_heads(cfg.priors)
        resolve_vgg16_weights(cfg.priors)


def preflight(cfg: Config, stage: str) -> dict[str, Any]:
    """Fast checks and resolved values (also what ``--dry-run`` prints), before Ray starts."""
    section = cfg.pretrain if stage == PRETRAIN else cfg.finetune
    key = f"{stage}.batch_size_per_worker"
    check_batch_size(section.batch_size_per_worker, key)
    uri, what = (photos_of(cfg), "photos") if stage == PRETRAIN else (anime_of(cfg), "anime")
    _fs, files = list_images(uri, what=what)
    check_enough_images(
        len(files),
        what=what,
        batch_key=key,
        batch_size_per_worker=section.batch_size_per_worker,
        workers=cfg.run.num_workers,
    )
    name = stage_run_name(cfg, stage)
    check_resume_workers(Path(storage_path_of(cfg)) / name, cfg.run.num_workers, run_name=name)
    info = {
        "stage run": stage_run_name(cfg, stage),
        "run dir": str(run_dir_of(cfg)),
        "world size": cfg.run.num_workers,
        "global batch": section.batch_size_per_worker * cfg.run.num_workers,
        f"{what} listed": len(files),
        "snapshot": str(snapshot_path_of(cfg, stage)),
    }
    if stage == FINETUNE:
        f = cfg.finetune
        if f.lambda_patch > 0:  # crops must fit the images
            random_patch_corners(cfg.stylegan.size, f.patch_size, f.patch_count, torch.Generator())
        info["source checkpoint"] = str(finetune_source_of(cfg))
    return info


# ----------------------------------------------------------------------------------------
# Inside each Ray Train worker


def _worker_context(config: dict, cfg: Config) -> WorkerContext:
    return ray_worker_context(cfg, tracking_uri=config["tracking_uri"], mlflow_run_id=config["mlflow_run_id"])


def _shard(name: str, cfg: Config, batch: int, rank: int) -> ShardSource:
    import ray.train

    return ShardSource(
        ray.train.get_dataset_shard(name), batch_size=batch, columns=["image"], seed=cfg.run.seed, rank=rank
    )


def _pretrain_worker(config: dict) -> dict:
    from scenimefy.stages.stylegan import train_pretrain

    cfg = from_dict(config["config"])
    ctx = _worker_context(config, cfg)
    sources = {"photos": _shard("photos", cfg, cfg.pretrain.batch_size_per_worker, ctx.rank)}
    return train_pretrain(cfg, sources, ctx)


def _finetune_worker(config: dict) -> dict:
    import ray.train

    from scenimefy.stages.stylegan import train_finetune

    cfg = from_dict(config["config"])
    ctx = _worker_context(config, cfg)
    sources = {"anime": _shard("anime", cfg, cfg.finetune.batch_size_per_worker, ctx.rank)}
    # The source is only read when starting; a resume takes G_s from the checkpoint.
    source_state = load_source_checkpoint(config["source_checkpoint"]) if ray.train.get_checkpoint() is None else None
    return train_finetune(cfg, sources, ctx, source_state=source_state)


# ----------------------------------------------------------------------------------------
# Driver side


def _fit(
    cfg: Config,
    stage: str,
    worker: Callable[[dict], dict],
    *,
    dataset_name: str,
    prepared: PreparedSet,
    keep_checkpoints: int,
    params: dict[str, Any],
    extra_config: dict[str, Any],
    callbacks: list | None,
    parent_run_id: str,
) -> StyleGANOutcome:
    """Start (or resume) the TorchTrainer of a stage, then copy its final snapshot out of Ray storage."""
    run_dir = run_dir_of(cfg)
    name = stage_run_name(cfg, stage)
    tracking_uri = resolve_tracking_uri(cfg.run.mlflow_tracking_uri, run_dir)
    run_id = find_or_create_run(tracking_uri, cfg.run.mlflow_experiment, name, params, parent_run_id)
    tracker = MlflowTracker(tracking_uri, run_id, spill_dir=run_dir)
    tracker.log_text(dump_yaml(cfg), "config.yaml")

    trainer = torch_trainer(
        worker,
        cfg,
        name=name,
        train_loop_config={
            "config": to_dict(cfg),
            "tracking_uri": tracking_uri,
            "mlflow_run_id": run_id,
            **extra_config,
        },
        datasets={dataset_name: training_dataset(prepared, ["image"])},
        keep_checkpoints=keep_checkpoints,
        callbacks=callbacks,
    )
    try:
        result = fit_or_fail(trainer, tracker, f"{stage} run {name!r}")
    except KeyboardInterrupt:  # Ctrl-C: the MLflow run ends KILLED, the latest checkpoint resumes it
        tracker.finish("KILLED")
        raise
    final = snapshot_path_of(cfg, stage)
    summary = result.return_value or {}
    with result.checkpoint.as_directory() as d:
        copy_atomic(Path(d) / STYLEGAN_SNAPSHOT_FILE, final)
        if "step" not in summary:
            summary = dict(load_state(d)["progress"])
    tracker.finish("FINISHED")
    return StyleGANOutcome(
        str(run_dir),
        str(final),
        result.checkpoint.path,
        int(summary["step"]),
        int(summary["num_images_seen"]),
        run_id,
        tracking_uri,
        resumed_from_step=summary.get("resumed_from_step"),
        rank_checksums=tuple(summary.get("rank_checksums", ())),
    )


def _prepare(cfg: Config, uri: str, what: str, batch_key: str, batch_size_per_worker: int) -> PreparedSet:
    prepared = prepare_images(uri, size=cfg.stylegan.size, cache_dir=_cache_dir(cfg), what=what)
    check_enough_images(
        prepared.num_rows,
        what=what,
        batch_key=batch_key,
        batch_size_per_worker=batch_size_per_worker,
        workers=cfg.run.num_workers,
    )
    return prepared


def _params(cfg: Config, what: str, prepared: PreparedSet, global_batch: int) -> dict[str, Any]:
    params = flatten(cfg)
    params[f"data.{what}_images"] = prepared.num_rows
    params[f"data.{what}_skipped"] = len(prepared.skipped)
    params["global_batch"] = global_batch
    return params


def pretrain_on_ray(cfg: Config, *, callbacks: list | None = None, parent_run_id: str = "") -> StyleGANOutcome:
    """Stage 0: train G_s on ``pretrain.photos`` (or ``data.photos``) on ``run.num_workers`` workers."""
    p = cfg.pretrain
    preflight(cfg, PRETRAIN)  # fail in a second, before Ray starts
    init_ray(num_cpus_needed=cfg.run.num_workers * cfg.run.cpus_per_worker + 1)
    run_dir_of(cfg).mkdir(parents=True, exist_ok=True)
    prepared = _prepare(cfg, photos_of(cfg), "photos", "pretrain.batch_size_per_worker", p.batch_size_per_worker)
    return _fit(
        cfg,
        PRETRAIN,
        _pretrain_worker,
        dataset_name="photos",
        prepared=prepared,
        keep_checkpoints=p.keep_checkpoints,
        params=_params(cfg, "photos", prepared, p.batch_size_per_worker * cfg.run.num_workers),
        extra_config={},
        callbacks=callbacks,
        parent_run_id=parent_run_id,
    )


def finetune_on_ray(cfg: Config, *, callbacks: list | None = None, parent_run_id: str = "") -> StyleGANOutcome:
    """Stage 1: fine-tune G_t from the source generator on ``finetune.anime`` (or ``data.anime``)."""
    f = cfg.finetune
    preflight(cfg, FINETUNE)
    source = finetune_source_of(cfg)
    source_networks(load_source_checkpoint(source), cfg.stylegan)  # size / channel mismatch: a clear error now
    check_priors(cfg)
    init_ray(num_cpus_needed=cfg.run.num_workers * cfg.run.cpus_per_worker + 1)
    run_dir_of(cfg).mkdir(parents=True, exist_ok=True)
    prepared = _prepare(cfg, anime_of(cfg), "anime", "finetune.batch_size_per_worker", f.batch_size_per_worker)
    params = _params(cfg, "anime", prepared, f.batch_size_per_worker * cfg.run.num_workers)
    params["finetune.source_checkpoint_resolved"] = str(source)
    return _fit(
        cfg,
        FINETUNE,
        _finetune_worker,
        dataset_name="anime",
        prepared=prepared,
        keep_checkpoints=f.keep_checkpoints,
        params=params,
        extra_config={"source_checkpoint": str(source)},
        callbacks=callbacks,
        parent_run_id=parent_run_id,
    )
