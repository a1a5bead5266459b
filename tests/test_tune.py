"""`scenimefy tune`: search spaces, resource planning, and a 2-trial sweep on a local Ray cluster.

The sweep test runs two tiny translator trials (32 px, 1 worker, 2 steps x 3 epochs) with ASHA,
interrupts the sweep after its first result, resumes it with `Tuner.restore`, and checks the
early stop, the resume from the Train checkpoint, the results table, the best preset, the plot
and the MLflow parent/child runs. Ray workers bind the epoch evaluator with a tiny random
feature network instead of Inception (`bind_tiny_evaluator`, a worker setup hook).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from ray.tune import Callback

from scenimefy.config import ConfigError, load_config

TESTS_DIR = str(Path(__file__).resolve().parent)
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------
# Search spaces


def test_every_space_under_tuning_parses():
    from scenimefy.distributed.tune.space import load_space

    files = sorted((REPO / "tuning").glob("*.yaml"))
    assert files, "tuning/ holds the search spaces"
    for file in files:
        dims = load_space(str(file))
        assert dims and all(d.key for d in dims)
    paper = {d.key: d for d in load_space(str(REPO / "tuning" / "paper.yaml"))}
    # log-uniform around the paper's weights, and the selection threshold
    for key, value in (
        ("translator.lambda_style", 0.05),
        ("translator.lambda_src", 0.05),
        ("translator.lambda_hdce", 0.1),
    ):
        assert paper[key].kind == "loguniform" and paper[key].args[0] < value < paper[key].args[1]
    assert paper["pairs.bce_threshold"].args[0] < 5.0 < paper["pairs.bce_threshold"].args[1]


def test_space_kinds_become_tune_domains():
    from ray.tune.search.sample import Float

    from scenimefy.distributed.tune.space import parse_space

    dims = {
        d.key: d
        for d in parse_space(
            {
                "translator.lambda_src": {"loguniform": [0.01, 0.2]},
                "pairs.bce_threshold": {"quniform": [4.0, 5.5, 0.25]},
                "pairs.min_classes": {"choice": [1, 2, 3]},
                "translator.lambda_hdce": {"grid": [0.05, 0.1]},
                "translator.nce_tau": 0.1,
            }
        )
    }
    assert isinstance(dims["translator.lambda_src"].domain(), Float) and dims["translator.lambda_src"].log_scale
    assert dims["translator.lambda_hdce"].domain() == {"grid_search": [0.05, 0.1]}
    assert dims["translator.nce_tau"].domain() == 0.1 and dims["translator.nce_tau"].kind == "fixed"
    assert dims["pairs.min_classes"].domain().categories == [1, 2, 3]


@pytest.mark.parametrize(
    "space, message",
    [
        ({"translator.lambda_srcc": {"uniform": [0.0, 1.0]}}, "unknown config key 'translator.lambda_srcc'"),
        ({"run.num_workers": {"choice": [1, 2]}}, "cannot be searched by a translator sweep"),
        ({"translator.lambda_src": {"gaussian": [0.0, 1.0]}}, "unknown kind 'gaussian'; valid kinds: uniform"),
        ({"translator.lambda_src": {"uniform": [0.2, 0.1]}}, "needs low < high"),
        ({"translator.lambda_src": {"loguniform": [0.0, 0.1]}}, "needs low > 0"),
        ({"translator.lambda_src": {"quniform": [0.0, 0.1]}}, r"takes 3 numbers \[low, high, q\]"),
        ({"translator.lambda_src": [0.05, 0.1]}, "a list needs a kind"),
        ({"pairs.min_classes": {"uniform": [1.5, 3.0]}}, "expected an integer"),
        ({"translator.hdce_identity": {"choice": [True, "maybe"]}}, "expected a boolean"),
        ({}, "expected a mapping of config keys"),
    ],
)
def test_bad_spaces_name_the_key_and_the_fix(space, message):
    from scenimefy.distributed.tune.space import parse_space

    with pytest.raises(ConfigError, match=message):
        parse_space(space, source="space.yaml")


def test_missing_space_file_is_a_clear_error(tmp_path):
    from scenimefy.distributed.tune.space import load_space

    with pytest.raises(ConfigError, match="tune.space=tuning/paper.yaml"):
        load_space("")
    with pytest.raises(ConfigError, match="no such file"):
        load_space(str(tmp_path / "nope.yaml"))


def test_the_sweep_modules_import_neither_ray_nor_mlflow():
    """Ray and MLflow load when a sweep runs, not when its space, plan or report is imported."""
    import subprocess

    code = (
        "import sys, scenimefy.distributed.tune, scenimefy.distributed.tune.space, "
        "scenimefy.distributed.tune.plan, scenimefy.distributed.tune.report, scenimefy.distributed.tune.trial; "
        "print(sorted(k for k in ('ray', 'mlflow') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------
# Resources


def _plan_cfg(*overrides):
    return load_config(None, list(overrides))


def test_concurrency_comes_from_the_clusters_gpus():
    from scenimefy.distributed.tune.plan import plan_trials

    plan = plan_trials(
        _plan_cfg("run.use_gpu=true", "run.num_workers=2", "run.cpus_per_worker=4"), {"GPU": 8, "CPU": 64}
    )
    assert (plan.gpus_per_trial, plan.max_concurrent) == (2, 4)
    assert plan.cpus_per_trial == 9 and plan.driver_resources == {"CPU": 1.0}
    capped = plan_trials(_plan_cfg("run.use_gpu=true", "tune.max_concurrent_trials=3"), {"GPU": 8, "CPU": 64})
    assert capped.max_concurrent == 3


def test_cpu_sweeps_leave_one_cpu_to_ray_data():
    from scenimefy.distributed.tune.plan import plan_trials

    plan = plan_trials(_plan_cfg("run.num_workers=1", "run.cpus_per_worker=1"), {"CPU": 4})
    assert (plan.gpus_per_trial, plan.cpus_per_trial, plan.max_concurrent) == (0, 2, 1)


def test_trial_drivers_use_the_trial_driver_resource_when_declared():
    from scenimefy.distributed.tune.plan import plan_trials

    plan = plan_trials(_plan_cfg("run.use_gpu=true"), {"GPU": 4, "CPU": 8, "trial_driver": 2})
    assert plan.driver_resources == {"trial_driver": 1.0} and plan.cpus_per_trial == 1
    assert plan.max_concurrent == 2  # two driver slots, four GPUs


def test_trials_needing_more_gpus_than_the_cluster_has_are_refused():
    from scenimefy.distributed.tune.plan import plan_trials

    with pytest.raises(ValueError, match=r"each trial asks for 4 GPU\(s\) .* but the cluster has 2"):
        plan_trials(_plan_cfg("run.use_gpu=true", "run.num_workers=4"), {"GPU": 2, "CPU": 64})
    with pytest.raises(ValueError, match=r"each trial asks for 1 GPU\(s\) .* the cluster has 0"):
        plan_trials(_plan_cfg("run.use_gpu=true", "run.num_workers=1"), {"CPU": 64})
    with pytest.raises(ValueError, match=r"each trial asks for 9 CPU\(s\)"):
        plan_trials(_plan_cfg("run.num_workers=2", "run.cpus_per_worker=4"), {"CPU": 4})


# ----------------------------------------------------------------------------------------
# Sweep configuration and results (no Ray)


def test_sweep_config_errors(tmp_path):
    from scenimefy.distributed.tune.plan import check_sweep_config
    from scenimefy.distributed.tune.space import parse_space

    photos = tmp_path / "photos"
    photos.mkdir()
    weights = parse_space({"translator.lambda_src": {"loguniform": [0.01, 0.1]}})
    threshold = parse_space({"pairs.bce_threshold": {"uniform": [4.0, 5.0]}})
    base = [f"evaluate.photos={photos}", "data.anime=/nowhere", "data.pairs=/nowhere", "evaluate.fid=false"]
    cases = [
        (["evaluate.every_epochs=2"], weights, "set evaluate.every_epochs=1"),
        (["tune.metric=lpips"], weights, "tune.metric='lpips': expected one of objective, fid, kid, l_bce"),
        (["tune.metric=fid"], weights, "tune.metric=fid needs evaluate.fid=true"),
        (["tune.grace_period=30"], weights, "exceeds the 20 epochs"),
        (["translator.max_steps=5"], weights, "set translator.max_steps=0"),
        ([], threshold, "set tune.manifest=PATH"),
        ([], weights, "holds no images"),  # the empty held-out folder
    ]
    for extra, dims, message in cases:
        with pytest.raises((ConfigError, ValueError), match=message):
            check_sweep_config(load_config(None, base + extra), dims)


def test_best_trial_prefers_those_that_trained_every_epoch():
    from scenimefy.distributed.tune.report import choose_best

    table = [
        {"trial_id": "a", "objective": 1.0, "status": "STOPPED_EARLY", "error": ""},
        {"trial_id": "b", "objective": 3.0, "status": "COMPLETED", "error": ""},
        {"trial_id": "c", "objective": 2.0, "status": "COMPLETED", "error": ""},
        {"trial_id": "d", "objective": math.nan, "status": "ERROR", "error": "boom"},
    ]
    assert choose_best(table, metric="objective", total_epochs=3)["trial_id"] == "c"
    assert choose_best(table[:1], metric="objective", total_epochs=3)["trial_id"] == "a"
    with pytest.raises(RuntimeError, match="no trial reported objective.*d: boom"):
        choose_best(table[3:], metric="objective", total_epochs=3)


def test_stopped_trials_are_closed_as_killed_even_when_their_run_closed_itself_as_failed(tmp_path):
    """ASHA's stop sometimes interrupts fit() in time for the trial to mark its own run FAILED."""
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.tracking import find_or_create_run, resolve_tracking_uri
    from scenimefy.distributed.tune.report import finish_mlflow

    uri = resolve_tracking_uri("", tmp_path)
    parent = find_or_create_run(uri, "scenimefy", "sweep")
    client = MlflowClient(uri)
    runs = {
        tid: find_or_create_run(uri, "scenimefy", f"sweep-{tid}", parent_run_id=parent) for tid in ("a", "b", "c", "d")
    }
    client.set_terminated(runs["b"], status="FAILED")  # stopped by ASHA, but its trainable saw the stop as an error
    client.set_terminated(runs["c"], status="FINISHED")  # completed, and closed itself
    table = [
        {"trial_id": "a", "status": "STOPPED_EARLY"},
        {"trial_id": "b", "status": "STOPPED_EARLY"},
        {"trial_id": "c", "status": "COMPLETED"},
        {"trial_id": "d", "status": "ERROR"},
    ]
    finish_mlflow(uri, parent, table, {"trial_id": "c", "objective": 1.0}, "objective", [])
    status = {tid: client.get_run(run_id).info.status for tid, run_id in runs.items()}
    assert status == {"a": "KILLED", "b": "KILLED", "c": "FINISHED", "d": "FAILED"}
    assert client.get_run(runs["b"]).data.tags["tune.status"] == "STOPPED_EARLY"
    assert client.get_run(parent).info.status == "FINISHED" and client.get_run(parent).data.tags["best_trial"] == "c"


def test_a_searched_threshold_is_a_filter_over_the_manifest_built_once(tmp_path):
    from scenimefy.demo.scenes import write_demo_dataset
    from scenimefy.distributed.tune.trial import selected_pairs

    data = write_demo_dataset(str(tmp_path / "demo"), n_photos=0, n_anime=0, n_pairs=4, n_test=0, size=16, seed=0)
    manifest = _write_manifest(tmp_path / "stage2", data["pairs_a"], data["pairs_b"], [3.9, 4.6, 5.1, 4.2])
    folder = Path(selected_pairs(str(manifest), threshold=4.5, min_classes=2, cache_root=tmp_path / "pairs"))
    assert folder.name == "threshold=4.5-min_classes=2"
    assert (
        sorted(os.listdir(folder / "trainA"))
        == sorted(os.listdir(folder / "trainB"))
        == ["00000000.png", "00000003.png"]
    )
    before = (folder / "trainA" / "00000000.png").stat().st_ino
    assert selected_pairs(str(manifest), threshold=4.5, min_classes=2, cache_root=tmp_path / "pairs") == str(folder)
    assert (folder / "trainA" / "00000000.png").stat().st_ino == before  # cached, not rebuilt
    assert (
        len(
            os.listdir(
                Path(selected_pairs(str(manifest), threshold=5.2, min_classes=2, cache_root=tmp_path / "pairs"))
                / "trainA"
            )
        )
        == 4
    )


# ----------------------------------------------------------------------------------------
# The sweep on a local Ray cluster


def bind_tiny_evaluator() -> None:
    """Ray worker setup hook: translator workers score with a tiny random feature network.

    Wraps `scenimefy.stages.translator.train_translator` when (and only if) a worker imports it,
    setting `ctx.evaluate = make_epoch_evaluator(cfg, feature_extractor=<tiny net>)`: the binding
    the Ray layer makes in production, with FID/KID on an 8-d random conv feature instead of
    Inception (Mask2Former is the tiny random one from the priors config).
    """
    import importlib.abc
    import importlib.util

    name = "scenimefy.stages.translator"

    def wrap(module) -> None:
        original = module.train_translator

        def train_translator(cfg, sources, steps_per_epoch, ctx):
            from tiny_priors import TinyFeatures

            from scenimefy.evaluation.scoring import make_epoch_evaluator

            ctx.evaluate = make_epoch_evaluator(cfg, feature_extractor=TinyFeatures())
            return original(cfg, sources, steps_per_epoch, ctx)

        module.train_translator = train_translator

    if name in sys.modules:
        wrap(sys.modules[name])
        return

    class Finder(importlib.abc.MetaPathFinder):  # patch at import time: workers that never train pay nothing
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module) -> None:
                exec_module(module)
                wrap(module)

            spec.loader.exec_module = exec_and_wrap
            return spec

    sys.meta_path.insert(0, Finder())


class InterruptOnce(Callback):
    """A Tune callback that aborts the sweep at its first result (once: a marker file remembers,
    because Tune pickles the callbacks with the experiment and restores them on resume)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(
                json.dumps({"trial_id": trial.trial_id, "epoch": result["epoch"], "objective": result["objective"]})
            )
            raise RuntimeError("simulated interruption")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_tune():
    """A local cluster WITH the dashboard: ASHA's early stops free Train resources via the State API.

    RAY_API_SERVER_ADDRESS points the workers (Train's PlacementGroupCleaner) at this cluster's
    dashboard even when other Ray instances run on the machine.
    """
    import ray

    port = _free_port()
    env = {
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}",
        "PYTHONPATH": os.pathsep.join([TESTS_DIR, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=0,
        include_dashboard=True,
        dashboard_port=port,
        object_store_memory=300 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": env, "worker_process_setup_hook": "test_tune.bind_tiny_evaluator"},
    )
    yield
    ray.shutdown()


def _write_manifest(stage2: Path, pairs_a: str, pairs_b: str, l_bce: list[float]) -> Path:
    """A stage-2 manifest in `scenimefy.stages.pair_manifest`'s format, over copies of the demo pairs."""
    import pandas as pd

    from scenimefy.stages.pair_manifest import MANIFEST_COLUMNS, MANIFEST_FILE

    rows = []
    for seed, name in enumerate(sorted(os.listdir(pairs_a))[: len(l_bce)]):
        rel = {kind: f"candidates/{kind}/{seed:08d}.png" for kind in ("photo", "anime")}
        for kind, src in (("photo", pairs_a), ("anime", pairs_b)):
            (stage2 / "candidates" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(src) / name, stage2 / rel[kind])
        rows.append(
            {
                "seed": seed,
                "l_bce": l_bce[seed],
                "n_classes": 2,
                "pixel_agreement": 0.5,
                "kept": l_bce[seed] < 5.0,
                "photo_path": rel["photo"],
                "anime_path": rel["anime"],
                "photo_labels_path": f"candidates/photo_labels/{seed:08d}.png",  # not read by selection
                "anime_labels_path": f"candidates/anime_labels/{seed:08d}.png",
            }
        )
    df = pd.DataFrame(rows)[list(MANIFEST_COLUMNS)]
    df.to_parquet(stage2 / MANIFEST_FILE)
    return stage2 / MANIFEST_FILE


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory):
    from tiny_priors import tiny_priors_config

    from scenimefy.demo.scenes import write_demo_dataset

    root = tmp_path_factory.mktemp("sweep")
    data = write_demo_dataset(str(root / "demo"), n_photos=6, n_anime=6, n_pairs=6, n_test=4, size=32, seed=0)
    l_bce = [3.6, 3.8, 4.4, 5.0, 5.8, 3.9]  # at thresholds 4.0-6.0: 3 to 6 pairs kept
    manifest = _write_manifest(root / "stage2", data["pairs_a"], data["pairs_b"], l_bce)
    space = root / "space.yaml"
    space.write_text(
        "translator.lambda_src: {loguniform: [0.025, 0.1]}\n"
        "pairs.bce_threshold: {uniform: [4.0, 6.0]}\n"
        # The objective's own weight, as a grid: trial 2 (1000 x L_BCE, L_BCE ~ 4-5) is far behind trial 1
        # (FID alone) at the first rung, so ASHA must stop it there.
        "evaluate.bce_weight: {grid: [0.0, 1000.0]}\n"
    )
    priors = tiny_priors_config(root / "priors", clip=False, lpips=False, mask2former=True)
    return {"root": root, "data": data, "manifest": manifest, "space": space, "priors": priors, "l_bce": l_bce}


def _sweep_cfg(inputs, out: Path, *extra):
    d = inputs["data"]
    overrides = [
        f"run.output_dir={out}",
        "run.num_workers=1",
        "run.cpus_per_worker=1",
        "data.load_size=32",
        "data.crop_size=32",
        f"data.photos={d['photos']}",
        f"data.anime={d['anime']}",
        "translator.ngf=8",
        "translator.ndf=8",
        "translator.n_blocks=1",
        "translator.num_patches=16",
        "translator.head_dim=16",
        "translator.batch_size_per_worker=1",
        "translator.steps_per_epoch=2",
        "translator.n_epochs=2",
        "translator.n_epochs_decay=1",
        "translator.log_every_steps=1",
        "translator.sample_every_steps=0",
        "translator.checkpoint_every_steps=1",  # mid-epoch checkpoints: their reports (no epoch) stay in Train
        f"evaluate.photos={d['test']}",
        "evaluate.size=32",
        "evaluate.batch_size=4",
        f"tune.space={inputs['space']}",
        f"tune.manifest={inputs['manifest']}",
        "tune.num_samples=1",
        "tune.grace_period=1",
        "tune.reduction_factor=2",
        "tune.name=sweep",
        *[f"priors.{k}={v}" for k, v in vars(inputs["priors"]).items()],
        *extra,
    ]
    return load_config("tiny", overrides)


@pytest.mark.ray
def test_trials_asking_for_more_gpus_than_the_cluster_has_fail_before_starting(ray_tune, sweep_inputs, tmp_path):
    from scenimefy.distributed.tune import run_sweep

    cfg = _sweep_cfg(sweep_inputs, tmp_path, "run.use_gpu=true", "run.num_workers=2")
    with pytest.raises(ValueError, match=r"each trial asks for 2 GPU\(s\) .* but the cluster has 0"):
        run_sweep(cfg)
    assert not (tmp_path / "sweep" / "tune").exists()  # nothing started


@pytest.mark.ray
def test_dry_run_prints_the_plan_without_starting_trials(ray_tune, sweep_inputs, tmp_path, capsys):
    import argparse

    from scenimefy.commands.tune import add_tune_commands

    parser = argparse.ArgumentParser()
    add_tune_commands(parser.add_subparsers(dest="command"))
    cfg = _sweep_cfg(sweep_inputs, tmp_path)
    args = parser.parse_args(["tune", "--space", str(sweep_inputs["space"]), "--dry-run", *_as_overrides(cfg)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert '"max_concurrent": 1' in out and '"epochs_per_trial": 3' in out and '"time_attr": "epoch"' in out
    assert not (tmp_path / "sweep").exists()


def _as_overrides(cfg) -> list[str]:
    from scenimefy.config import flatten

    return [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in flatten(cfg).items()]


@pytest.mark.ray
def test_two_trial_sweep_stops_one_early_resumes_after_an_interruption_and_exports_the_best(
    ray_tune, sweep_inputs, tmp_path
):
    import pandas as pd
    import yaml
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.tune import run_sweep

    cfg = _sweep_cfg(sweep_inputs, tmp_path)

    # First run: interrupted at its first result (trial 1, epoch 1, after that epoch's checkpoint).
    marker = tmp_path / "interrupted"
    with pytest.raises(Exception, match="simulated interruption"):
        run_sweep(cfg, callbacks=[InterruptOnce(str(marker))])
    interrupted = json.loads(marker.read_text())
    assert interrupted["epoch"] == 1.0

    # Resuming with other settings is refused; the same settings resume.
    with pytest.raises(ValueError, match=r"already exists .* with other settings \(tune.num_samples\)"):
        run_sweep(_sweep_cfg(sweep_inputs, tmp_path, "tune.num_samples=2"))
    out = run_sweep(cfg)
    assert out.resumed

    table = {r["evaluate.bce_weight"]: r for r in out.table}
    assert sorted(table) == [0.0, 1000.0]
    first, second = table[0.0], table[1000.0]
    assert first["status"] == "COMPLETED" and first["epochs"] == 3
    assert first["generator"] == str(tmp_path / "sweep" / "trials" / f"sweep-{first['trial_id']}" / "generator.pt")
    assert Path(first["generator"]).is_file() and second["generator"] == ""  # a stopped trial has only checkpoints
    # ASHA (grace 1, reduction 2, max_t 3 epochs: rungs at epochs 1 and 2) stops trial 2 at the first
    # rung where trial 1 has a value, because its objective there is behind trial 1's.
    assert interrupted["trial_id"] == first["trial_id"]
    objective_by_epoch = {
        key: pd.read_csv(Path(row["trial_dir"]) / "progress.csv").set_index("epoch")["objective"].to_dict()
        for key, row in table.items()
    }
    objective_by_epoch[0.0].setdefault(1.0, interrupted["objective"])  # the interrupted result is not in progress.csv
    assert second["status"] == "STOPPED_EARLY" and second["epochs"] in (1, 2)
    stop = float(second["epochs"])
    # ASHA records a trial at a rung with its first result at or past the rung's epoch. Trial 1's
    # epoch-2 result can be missing: its Train run may checkpoint epoch 2 before the interruption
    # lands, and then resumes at epoch 3 (Tune never sees epoch 2).
    reference_epoch = min(e for e in objective_by_epoch[0.0] if e >= stop)
    assert objective_by_epoch[1000.0][stop] > objective_by_epoch[0.0][reference_epoch]
    for row in out.table:
        assert math.isfinite(row["fid"]) and 4.0 < row["l_bce"] < 5.2
        assert row["objective"] == pytest.approx(row["fid"] + row["evaluate.bce_weight"] * row["l_bce"], rel=1e-6)

    # Each trial trained on the pairs kept at its threshold (a filter over the manifest).
    for row in out.table:
        folder = tmp_path / "sweep" / "pairs" / f"threshold={row['pairs.bce_threshold']:.6g}-min_classes=2"
        kept = sum(v < row["pairs.bce_threshold"] for v in sweep_inputs["l_bce"])
        assert len(os.listdir(folder / "trainA")) == len(os.listdir(folder / "trainB")) == kept

    # The interrupted trial resumed from its latest Train checkpoint (epoch 1, or 2 if it got there
    # before the interruption landed): each step of epoch 1 was trained once.
    client = MlflowClient(out.tracking_uri)
    children = client.search_runs(
        [client.get_run(out.parent_run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'",
    )
    assert len(children) == 2
    by_trial = {run.data.tags["mlflow.runName"].rsplit("-", 1)[-1]: run for run in children}
    completed = by_trial[first["trial_id"]]
    # (steps after the checkpoint may have run before the interruption took effect: they run again)
    steps = [m.step for m in client.get_metric_history(completed.info.run_id, "loss_G")]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6] and steps.count(1) == steps.count(2) == 1
    evaluated = [m.step for m in client.get_metric_history(completed.info.run_id, "objective")]
    assert sorted(set(evaluated)) == [2, 4, 6] and evaluated.count(2) == 1
    assert completed.info.status == "FINISHED"
    assert by_trial[second["trial_id"]].info.status == "KILLED"
    assert by_trial[second["trial_id"]].data.tags["tune.status"] == "STOPPED_EARLY"

    # Exports: results table, best preset (loads as a config), plot; all on the parent run.
    csv = pd.read_csv(out.results_csv)
    assert len(csv) == 2 and {"trial_id", "status", "objective", "translator.lambda_src", "pairs.bce_threshold"} <= set(
        csv.columns
    )
    assert out.best["trial_id"] == first["trial_id"]
    best = load_config(out.best_preset)
    assert best.translator.lambda_src == pytest.approx(first["translator.lambda_src"])
    assert best.pairs.bce_threshold == pytest.approx(first["pairs.bce_threshold"])
    assert best.evaluate.bce_weight == 0.0 and Path(best.data.pairs, "trainA").is_dir()
    assert yaml.safe_load(Path(out.best_preset).read_text())["run"]["name"] == "sweep-best"
    assert Path(out.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parent = client.get_run(out.parent_run_id)
    assert parent.data.tags["best_trial"] == first["trial_id"]
    assert parent.data.metrics["trials_stopped_early"] == 1.0
    assert {"results.csv", "best.yaml", "objective_vs_params.png", "sweep.yaml"} <= {
        a.path for a in client.list_artifacts(out.parent_run_id)
    }


def test_only_reports_that_close_an_epoch_reach_tune(monkeypatch):
    """Interval-checkpoint reports carry no epoch and no scores; Tune would refuse them as results."""
    import ray.tune.integration.ray_train as ray_train

    from scenimefy.distributed.tune.trial import epoch_results_to_tune

    forwarded = []

    class Session:
        def _get_or_create_inter_actor_queue(self):
            return type("Queue", (), {"put": staticmethod(forwarded.append)})()

    monkeypatch.setattr(ray_train, "_in_tune_session", lambda: True)
    monkeypatch.setattr(ray_train, "get_session", lambda: Session())
    callback = epoch_results_to_tune()
    callback.after_report(None, [{"step": 3.0, "loss_G": 1.0}], None)  # an interval checkpoint mid-epoch
    callback.after_report(None, [{"step": 4.0, "epoch": 2.0, "objective": 7.5}], None)  # the epoch's close
    assert forwarded == [{"step": 4.0, "epoch": 2.0, "objective": 7.5}]
