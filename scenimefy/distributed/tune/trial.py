"""The Tune trial: one Ray Train run of the translator, and the pairs kept at a searched threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scenimefy.config import Config, from_dict, set_value
from scenimefy.data.images import atomic_path
from scenimefy.distributed.data import file_lock
from scenimefy.distributed.tune.plan import TIME_ATTR
from scenimefy.distributed.tune.space import THRESHOLD_KEYS


def apply_trial_params(base: dict, params: dict[str, Any]) -> Config:
    cfg = from_dict(base)
    for key, value in params.items():
        set_value(cfg, key, value)
    return cfg


# ----------------------------------------------------------------------------------------
# Pairs at a searched threshold (a filter over stage 2's stored scores, never a new segmentation)


def selected_pairs(manifest: str, *, threshold: float, min_classes: int, cache_root: Path) -> str:
    """The pairs folder (trainA/, trainB/) kept at (threshold, min_classes), built once per value."""
    from scenimefy.stages.pair_manifest import materialize_selection

    folder = cache_root / f"threshold={threshold:.6g}-min_classes={min_classes}"
    marker = folder / "_selected.yaml"
    with file_lock(cache_root / f".{folder.name}.lock"):
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
    from that run's latest checkpoint (docs/ray.md). Its epoch results reach Tune through
    `epoch_results_to_tune()`.
    """
    from ray import tune

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
    train_translator_on_ray(cfg, callbacks=[epoch_results_to_tune()], parent_run_id=sweep["parent_run_id"])


def epoch_results_to_tune() -> Any:
    """A Ray Train callback that passes to Tune the reports that close an epoch, and only those.

    The translator also reports at its interval checkpoints; those reports carry no `epoch` (ASHA's
    clock) and no scores, and Tune refuses a result without its metric. Ray's `TuneReportCallback`
    forwards every report; this one keeps the epoch results.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochResultsToTune(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and TIME_ATTR in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return EpochResultsToTune()
