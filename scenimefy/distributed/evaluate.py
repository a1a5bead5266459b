"""`scenimefy evaluate`: translate held-out photos, then FID/KID and L_BCE, a JSON report, MLflow.

1. Translate the first evaluate.max_images photos of evaluate.photos with a checkpoint
   (`translate_paths`, exact sizes), or take existing translations matched by file stem.
2. FID and KID between the translations and the anime reference, both resized to
   evaluate.size, on the driver (the FID Inception from `scenimefy.priors.loading`, offline-capable).
3. L_BCE between each photo and its translation on a pool of Ray Data actors, each holding
   one Mask2Former (stage 2's segmenter settings: pairs.segmenter_actors, pairs.gpus_per_actor,
   pairs.precision); both images at evaluate.size.
4. `report.json` (summary + per-image scores) written atomically, and an MLflow run
   `<run.name>-eval` (a child of the training run `<run.name>` when that run is in the store).

Actors read the images by path: on a multi-node cluster the output folder must be on storage
every node sees (as Ray Train's storage must be).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scenimefy.config import Config, PriorsConfig, flatten
from scenimefy.data.decode import ImageDecodeError, list_image_files, load_image, resize_square
from scenimefy.data.images import atomic_path, from_uint8
from scenimefy.distributed.cluster import init_ray, local_path
from scenimefy.distributed.tracking import RUN_NAME_TAG, MlflowTracker, find_or_create_run, resolve_tracking_uri
from scenimefy.evaluation.metrics import DistributionMetrics, fid_between_files
from scenimefy.evaluation.scoring import (
    anime_reference,
    held_out_photos,
    pair_by_stem,
    summarize_semantic,
    tuning_objective,
)
from scenimefy.stages.device import resolve_device

REPORT_FILE = "report.json"
SEMANTIC_COLUMNS = ("l_bce", "n_classes", "pixel_agreement")


@dataclass
class EvaluationOutcome:
    report: dict
    report_path: str
    translations: str
    mlflow_run_id: str
    tracking_uri: str


# ----------------------------------------------------------------------------------------
# L_BCE on Ray Data actors


class SemanticScoreActor:
    """One Mask2Former per actor: rows {"index", "photo", "translation"} (paths) -> per-pair L_BCE.

    Both images are resized to `size` x `size` (bicubic) and scored in one batched call.
    A pair with an unreadable image gets NaN scores and its reason in "error".
    """

    def __init__(self, priors: dict, size: int, precision: str, use_gpu: bool) -> None:
        from scenimefy.priors.segmentation import SemanticScorer

        device = resolve_device("cuda" if use_gpu else "cpu", cpu_fallback=True)
        self.size = size
        self.scorer = SemanticScorer.from_priors(PriorsConfig(**priors), device, precision=precision)

    def _load(self, path: str) -> np.ndarray:
        return resize_square(load_image(path), self.size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["photo"])
        photos, animes, ok, errors = [], [], [], [""] * n
        for i in range(n):
            try:
                photos.append(self._load(str(batch["photo"][i])))
                animes.append(self._load(str(batch["translation"][i])))
                ok.append(i)
            except (ImageDecodeError, OSError) as e:
                if len(photos) > len(animes):
                    photos.pop()
                errors[i] = str(e).splitlines()[0] if str(e) else type(e).__name__
        out = {
            "index": np.asarray(batch["index"]),
            "photo": np.asarray(batch["photo"]),
            "translation": np.asarray(batch["translation"]),
            "l_bce": np.full(n, np.nan, np.float32),
            "n_classes": np.zeros(n, np.int64),
            "pixel_agreement": np.full(n, np.nan, np.float32),
            "error": np.asarray(errors, dtype=object),
        }
        if ok:
            scores = self.scorer.score_pairs(from_uint8(np.stack(photos)), from_uint8(np.stack(animes)))
            for key in SEMANTIC_COLUMNS:
                out[key][ok] = scores[key].cpu().numpy()
        return out


def semantic_scores_on_ray(
    pairs: list[tuple[str, str]],
    *,
    priors: PriorsConfig,
    size: int,
    batch_size: int,
    actors: int,
    use_gpu: bool,
    gpus_per_actor: float,
    precision: str,
) -> list[dict]:
    """Per-pair scores, in the order of `pairs`, from an actor pool of `actors` Mask2Formers."""
    import dataclasses

    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    if actors < 1:
        raise ValueError(f"pairs.segmenter_actors={actors}: need at least 1 Mask2Former actor")
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    if use_gpu and gpus_per_actor > cluster_gpus:
        raise ValueError(
            f"each Mask2Former actor asks for {gpus_per_actor:g} GPU (pairs.gpus_per_actor, run.use_gpu=true) but the "
            f"cluster has {cluster_gpus:g}: set run.use_gpu=false or add a GPU node"
        )
    rows = [
        {"index": i, "photo": os.path.abspath(p), "translation": os.path.abspath(t)} for i, (p, t) in enumerate(pairs)
    ]
    resources = {"num_gpus": gpus_per_actor} if use_gpu else {"num_cpus": 0.5}  # fractional: leave CPUs to reads
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 4 * actors))).map_batches(
        SemanticScoreActor,
        fn_constructor_kwargs={
            "priors": dataclasses.asdict(priors),
            "size": size,
            "precision": precision,
            "use_gpu": use_gpu,
        },
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=actors),
        **resources,
    )
    scored = ds.to_pandas().sort_values("index").to_dict("records")  # blocks may finish out of order
    return scored


# ----------------------------------------------------------------------------------------
# FID / KID on the driver


def distribution_metrics(
    anime: list[str], translations: list[str], *, priors: PriorsConfig, size: int, batch_size: int, device: torch.device
) -> dict:
    """FID/KID of the translations against the anime reference, both resized to `size`."""
    result = fid_between_files(
        anime,
        translations,
        metrics=DistributionMetrics(priors, device=device),
        size=size,
        batch_size=batch_size,
        names=("the anime reference", "the translations"),
    )
    del result["size"]
    result["skipped_anime"], result["skipped_translations"] = result.pop("skipped_real"), result.pop("skipped_fake")
    return result


# ----------------------------------------------------------------------------------------
# The driver


def _existing_run_id(tracking_uri: str, experiment: str, run_name: str) -> str:
    """The MLflow run of `run_name` if the store has one ("" otherwise; nothing is created)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return ""
    found = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1
    )
    return found[0].info.run_id if found else ""


def _translate(
    cfg: Config, checkpoint: str, photos: list[str], out: Path, device: torch.device
) -> tuple[list[tuple[str, str]], list]:
    from scenimefy.inference.translate import load_translator, translate_paths

    generator = load_translator(checkpoint, device)
    tr = cfg.translate
    report = translate_paths(
        generator,
        photos,
        out,
        batch_size=tr.batch_size,
        max_side=0,
        tile=tr.tile,
        tile_overlap=tr.tile_overlap,
        device=device,
        memory_budget_gib=tr.memory_budget_gib,
        progress=False,
    )
    del generator
    if device.type == "cuda":
        torch.cuda.empty_cache()
    skipped_sources = {p for p, _ in report.skipped}
    kept = [p for p in photos if p not in skipped_sources]
    assert len(kept) == len(report.written), "translate_paths writes one output per readable input, in order"
    return list(zip(kept, report.written)), report.skipped


def evaluate_translator(
    cfg: Config, *, out_dir: str, checkpoint: str = "", translations: str = "", mlflow_run_name: str = ""
) -> EvaluationOutcome:
    """Translate (or take) the held-out photos' translations and score them; see the module doc."""
    ev = cfg.evaluate
    if bool(checkpoint) == bool(translations):
        raise ValueError(
            "give a checkpoint to translate the photos with, or a folder of existing translations (not both)"
        )
    if not (ev.fid or ev.semantic):
        raise ValueError("nothing to evaluate: set evaluate.fid=true and/or evaluate.semantic=true")
    started = time.perf_counter()
    photos = held_out_photos(ev)
    anime = anime_reference(cfg) if ev.fid else []
    out = Path(local_path(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.translate.device)
    seconds: dict[str, float] = {}

    # Translations: made here from the checkpoint, or given (matched to the photos by file stem).
    tick = time.perf_counter()
    if checkpoint:
        translation_dir = out / "translations"
        pairs, skipped_photos = _translate(cfg, checkpoint, photos, translation_dir, device)
        if not pairs:
            raise ValueError(f"none of the {len(photos)} photos in {ev.photos!r} could be read")
    else:
        translation_dir = Path(local_path(translations))
        try:
            translated = list_image_files(translation_dir)
        except FileNotFoundError:
            raise ValueError(f"translations folder {translations!r} does not exist") from None
        if not translated:
            raise ValueError(f"translations folder {translations!r} holds no images (searched recursively)")
        pairs = pair_by_stem(photos, translated, subset=bool(ev.max_images))
        skipped_photos = []
    seconds["translate"] = time.perf_counter() - tick
    if ev.fid and len(pairs) < 2:
        raise ValueError(f"FID/KID need at least 2 translated photos, got {len(pairs)}")

    report: dict = {
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else "",
        "photos": ev.photos,
        "anime": cfg.evaluate.anime or cfg.data.anime,
        "translations": str(translation_dir),
        "size": ev.size,
        "num_photos": len(photos),
        "num_translated": len(pairs),
        "skipped_photos": [{"path": p, "reason": r} for p, r in skipped_photos],
        "bce_weight": ev.bce_weight,
    }

    # FID / KID on the driver.
    if ev.fid:
        tick = time.perf_counter()
        report.update(
            distribution_metrics(
                anime, [t for _, t in pairs], priors=cfg.priors, size=ev.size, batch_size=ev.batch_size, device=device
            )
        )
        report["kid"] = report["kid_mean"]
        seconds["fid_kid"] = time.perf_counter() - tick

    # L_BCE on Ray Data actors.
    per_image = [{"photo": p, "translation": t} for p, t in pairs]
    if ev.semantic:
        tick = time.perf_counter()
        p = cfg.pairs
        init_ray(num_cpus_needed=1 + 0.5 * p.segmenter_actors)
        per_image = semantic_scores_on_ray(
            pairs,
            priors=cfg.priors,
            size=ev.size,
            batch_size=ev.batch_size,
            actors=p.segmenter_actors,
            use_gpu=cfg.run.use_gpu,
            gpus_per_actor=p.gpus_per_actor,
            precision=p.precision,
        )
        per_image = [_plain_row(r) for r in per_image]
        report.update(summarize_semantic([r["l_bce"] for r in per_image], [r["pixel_agreement"] for r in per_image]))
        seconds["l_bce"] = time.perf_counter() - tick
    report["objective"] = tuning_objective(report.get("fid"), report.get("l_bce"), bce_weight=ev.bce_weight)
    seconds["total"] = time.perf_counter() - started
    report["seconds"] = seconds
    report["per_image"] = per_image

    # Report and MLflow.
    report_path = out / REPORT_FILE
    with atomic_path(report_path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1, allow_nan=True))
    tracking_uri, run_id = _log_to_mlflow(cfg, report, report_path, mlflow_run_name or f"{cfg.run.name}-eval")
    return EvaluationOutcome(report, str(report_path), str(translation_dir), run_id, tracking_uri)


def _plain_row(row: dict) -> dict:
    """JSON-ready values (numpy scalars -> Python; NaN kept for unscored pairs)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if k == "index":
            continue
        out[k] = v
    return out


SUMMARY_METRICS = ("fid", "kid_mean", "kid_std", "l_bce", "l_bce_std", "pixel_agreement", "objective")


def _log_to_mlflow(cfg: Config, report: dict, report_path: Path, run_name: str) -> tuple[str, str]:
    from scenimefy.distributed.cluster import run_dir_of

    tracking_uri = resolve_tracking_uri(cfg.run.mlflow_tracking_uri, run_dir_of(cfg))
    parent = _existing_run_id(tracking_uri, cfg.run.mlflow_experiment, cfg.run.name)
    params = {k: v for k, v in flatten(cfg).items() if k.startswith("evaluate.")}
    params.update(
        checkpoint=report["checkpoint"],
        translations=report["translations"],
        num_photos=report["num_photos"],
        num_translated=report["num_translated"],
    )
    run_id = find_or_create_run(tracking_uri, cfg.run.mlflow_experiment, run_name, params, parent_run_id=parent)
    tracker = MlflowTracker(tracking_uri, run_id, spill_dir=run_dir_of(cfg))
    tracker.log_metrics({k: float(report[k]) for k in SUMMARY_METRICS if k in report}, step=0)
    tracker.log_artifact(report_path)
    tracker.finish("FINISHED")
    return tracking_uri, run_id
