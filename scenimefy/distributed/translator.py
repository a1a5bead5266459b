"""Stage 3 on Ray Train: prepare data with Ray Data, run `train_translator` on N DDP workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scenimefy.config import Config, flatten, from_dict, to_dict
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
    match_pairs,
    prepare_images,
    prepare_pairs,
    training_dataset,
)
from scenimefy.distributed.tracking import MlflowTracker, find_or_create_run, resolve_tracking_uri
from scenimefy.stages.checkpoint import TRANSLATOR_SNAPSHOT_FILE, load_state


@dataclass
class TrainOutcome:
    run_dir: str
    generator: str  # the final inference snapshot
    checkpoint: str  # the latest training checkpoint (Ray storage)
    step: int
    mlflow_run_id: str
    tracking_uri: str
    resumed_from_step: int | None = None
    rank_checksums: tuple[float, ...] = ()  # one per worker: equal when DDP kept them identical


def check_data_folders(cfg: Config) -> None:
    list_images(cfg.data.photos, what="photos")
    list_images(cfg.data.anime, what="anime")
    match_pairs(cfg.data.pairs)
    from scenimefy.evaluation.scoring import make_epoch_evaluator

    make_epoch_evaluator(cfg)  # lists the held-out photos and the anime reference (nothing loads yet)


def prepare_translator_data(cfg: Config) -> dict[str, PreparedSet]:
    cache = (
        local_path(cfg.data.cache_dir) if cfg.data.cache_dir else str(Path(local_path(cfg.run.output_dir)) / "cache")
    )
    size = cfg.data.load_size
    return {
        "photos": prepare_images(cfg.data.photos, size=size, cache_dir=cache, what="photos"),
        "anime": prepare_images(cfg.data.anime, size=size, cache_dir=cache, what="anime"),
        "pairs": prepare_pairs(cfg.data.pairs, size=size, cache_dir=cache),
    }


def steps_per_epoch_for(cfg: Config, prepared: dict[str, PreparedSet]) -> int:
    """The authors' epoch, max(|X|, |Y|) images, in global batches (or the configured value)."""
    t, workers = cfg.translator, cfg.run.num_workers
    for name, p in prepared.items():
        per_worker = p.num_rows // workers
        if per_worker < t.batch_size_per_worker:
            raise ValueError(
                f"{name}: {p.num_rows} usable image(s) give each of {workers} workers {per_worker}, fewer than "
                f"translator.batch_size_per_worker={t.batch_size_per_worker}; add images or lower the batch / workers"
            )
    if t.steps_per_epoch:
        return t.steps_per_epoch
    return max(prepared["photos"].num_rows, prepared["anime"].num_rows) // (t.batch_size_per_worker * workers)


def _worker_loop(config: dict) -> dict:
    """Runs inside each Ray Train worker."""
    import ray.train

    cfg = from_dict(config["config"])
    from scenimefy.evaluation.scoring import make_epoch_evaluator
    from scenimefy.stages.translator import train_translator

    # Every rank holds the evaluator (the loop needs to know evaluation is on, to broadcast
    # rank 0's scores); only rank 0 calls it, and it loads Inception / Mask2Former then.
    ctx = ray_worker_context(
        cfg,
        tracking_uri=config["tracking_uri"],
        mlflow_run_id=config["mlflow_run_id"],
        evaluate=make_epoch_evaluator(cfg),
    )
    batch = cfg.translator.batch_size_per_worker

    def shard(name: str, columns: list[str], seed: int) -> ShardSource:
        return ShardSource(
            ray.train.get_dataset_shard(name), batch_size=batch, columns=columns, seed=seed, rank=ctx.rank
        )

    seed = cfg.run.seed
    sources = {
        "photos": shard("photos", ["image"], seed),
        "anime": shard("anime", ["image"], seed + 1),
        "pairs": shard("pairs", ["image_a", "image_b"], seed + 2),
    }
    return train_translator(cfg, sources, config["steps_per_epoch"], ctx)


def train_translator_on_ray(cfg: Config, *, callbacks: list | None = None, parent_run_id: str = "") -> TrainOutcome:
    """Prepare data, start (or resume) the TorchTrainer named `run.name`, and finish the MLflow run."""
    check_data_folders(cfg)  # fail in a second, before Ray starts, on a missing or empty folder
    check_resume_workers(Path(storage_path_of(cfg)) / cfg.run.name, cfg.run.num_workers, run_name=cfg.run.name)
    init_ray(num_cpus_needed=cfg.run.num_workers * cfg.run.cpus_per_worker + 1)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_translator_data(cfg)
    steps = steps_per_epoch_for(cfg, prepared)
    tracking_uri = resolve_tracking_uri(cfg.run.mlflow_tracking_uri, run_dir)
    params = flatten(cfg)
    params.update({f"data.{k}_images": p.num_rows for k, p in prepared.items()})
    params.update({f"data.{k}_skipped": len(p.skipped) for k, p in prepared.items()})
    params["translator.steps_per_epoch_resolved"] = steps
    run_id = find_or_create_run(tracking_uri, cfg.run.mlflow_experiment, cfg.run.name, params, parent_run_id)
    tracker = MlflowTracker(tracking_uri, run_id, spill_dir=run_dir)
    tracker.log_text(_config_yaml(cfg), "config.yaml")

    datasets = {
        "photos": training_dataset(prepared["photos"], ["image"]),
        "anime": training_dataset(prepared["anime"], ["image"]),
        "pairs": training_dataset(prepared["pairs"], ["image_a", "image_b"]),
    }
    trainer = torch_trainer(
        _worker_loop,
        cfg,
        name=cfg.run.name,
        train_loop_config={
            "config": to_dict(cfg),
            "steps_per_epoch": steps,
            "tracking_uri": tracking_uri,
            "mlflow_run_id": run_id,
        },
        datasets=datasets,
        keep_checkpoints=cfg.translator.keep_checkpoints,
        callbacks=callbacks,
    )
    try:
        result = fit_or_fail(trainer, tracker, f"training run {cfg.run.name!r}")
    except KeyboardInterrupt:  # Ctrl-C: the MLflow run ends KILLED, the latest checkpoint resumes it
        tracker.finish("KILLED")
        raise
    final = run_dir / TRANSLATOR_SNAPSHOT_FILE
    with result.checkpoint.as_directory() as d:
        step = int(load_state(d)["progress"]["step"])
        copy_atomic(Path(d) / TRANSLATOR_SNAPSHOT_FILE, final)
    tracker.log_artifact(final)
    tracker.finish("FINISHED")
    summary = result.return_value or {}
    return TrainOutcome(
        str(run_dir),
        str(final),
        result.checkpoint.path,
        step,
        run_id,
        tracking_uri,
        resumed_from_step=summary.get("resumed_from_step"),
        rank_checksums=tuple(summary.get("rank_checksums", ())),
    )


def _config_yaml(cfg: Config) -> str:
    from scenimefy.config import dump_yaml

    return dump_yaml(cfg)
