"""`run_sweep`: check the sweep, plan it on the cluster, run (or resume) the Tuner, write the results."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenimefy.config import Config, to_dict
from scenimefy.distributed.cluster import init_ray
from scenimefy.distributed.logs import active_log_file
from scenimefy.distributed.tune.plan import (
    SWEEP_FILE,
    TIME_ATTR,
    TrialPlan,
    check_or_save_spec,
    check_sweep_config,
    plan_trials,
    sweep_dir_of,
    trial_base_config,
)
from scenimefy.distributed.tune.report import (
    BEST_PRESET_FILE,
    PLOT_FILE,
    RESULTS_FILE,
    choose_best,
    finish_mlflow,
    plot_objective,
    results_table,
    write_best_preset,
    write_results_csv,
)
from scenimefy.distributed.tune.space import THRESHOLD_KEYS, load_space, space_to_dict
from scenimefy.distributed.tune.trial import run_trial

EXPERIMENT_DIR = "tune"


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


def check_state_api() -> None:
    """ASHA frees a stopped trial's Train placement group only through the State API.

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
    check_or_save_spec(sweep_dir, cfg, dims)

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
            f"[tune] {cfg.tune.num_samples} sample(s) over {', '.join(d.key for d in dims)}; "
            f"up to {plan.max_concurrent} trial(s) at once, "
            f"{plan.gpus_per_trial} GPU(s) and {plan.cpus_per_trial:g} CPU(s) each; "
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
                verbose=0 if active_log_file() is not None else 1,  # a quiet run: no status tables on the terminal
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
    finish_mlflow(
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
