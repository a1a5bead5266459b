"""After the sweep: the results table, the best trial as a preset, the plot, the MLflow close-out."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scenimefy.config import Config, dump_yaml, set_value
from scenimefy.data.images import atomic_path
from scenimefy.distributed.tune.plan import TIME_ATTR
from scenimefy.distributed.tune.space import THRESHOLD_KEYS, Dimension

RESULTS_FILE = "results.csv"
BEST_PRESET_FILE = "best.yaml"
PLOT_FILE = "objective_vs_params.png"


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
        f"# Best trial of sweep {cfg.tune.name!r} ({best['trial_id']}): "
        f"{cfg.tune.metric} = {best[cfg.tune.metric]:.6g}",
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


def finish_mlflow(
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
