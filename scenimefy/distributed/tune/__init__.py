"""`scenimefy tune`: Ray Tune over the translator's loss weights and the pair-selection threshold.

Each trial is a whole stage-3 training run (`train_translator_on_ray`) with its own Ray Train
workers; Tune (2.60, Train V2) runs a *function trainable* that builds and fit()s the
TorchTrainer with `TuneReportCallback()` (docs/ray.md). Rank 0 scores the generator at
every epoch end (`scenimefy.evaluation.scoring.EpochEvaluator`: FID, KID, L_BCE on a held-out
subset), so Tune receives one result per epoch and ASHA stops trials on `tune.metric`
(default: objective = FID + evaluate.bce_weight * L_BCE) with `time_attr="epoch"`.

Modules: `space` (search spaces, pure), `plan` (sweep checks, resources, the trials' base
config; pure), `trial` (the function trainable and the pairs at a searched threshold),
`driver` (`run_sweep`), `report` (results table, best preset, plot, MLflow close-out).

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

from scenimefy.distributed.tune.driver import run_sweep

__all__ = ["run_sweep"]
