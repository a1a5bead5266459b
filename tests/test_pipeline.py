"""`scenimefy pipeline`: wiring of stage outputs, skipping finished stages, records, MLflow parent/child runs.

The unit tests replace the four Ray drivers by fakes that write their outputs where the real
ones do (no Ray); the last test runs the real pipeline on a local Ray at tiny sizes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from scenimefy.config import ConfigError, load_config
from scenimefy.distributed.pipeline import (
    FINETUNE,
    PAIRS,
    PRETRAIN,
    STAGES,
    TRAIN,
    plan_pipeline,
    record_path_of,
    run_pipeline,
)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _cfg(tmp_path, tracking_uri, *extra, name="pipe"):
    return load_config(
        "tiny",
        [f"run.output_dir={tmp_path / 'runs'}", f"run.name={name}", f"run.mlflow_tracking_uri={tracking_uri}", *extra],
    )


class FakeDrivers:
    """Stand-ins for the four drivers: record each call's config, write the outputs, open a child MLflow run."""

    def __init__(self, monkeypatch):
        from scenimefy.distributed import cluster, pairs, pipeline, stylegan, translator

        self.calls: list[tuple[str, object, str]] = []
        self.fail: set[str] = set()
        self.version = 0  # changes what pretrain writes (a rerun that trains further)
        monkeypatch.setattr(cluster, "init_ray", lambda **kwargs: None)
        monkeypatch.setattr(pipeline, "preflight_stage", lambda plan: None)
        monkeypatch.setattr(
            stylegan, "pretrain_on_ray", lambda cfg, parent_run_id="": self._stylegan(PRETRAIN, cfg, parent_run_id)
        )
        monkeypatch.setattr(
            stylegan, "finetune_on_ray", lambda cfg, parent_run_id="": self._stylegan(FINETUNE, cfg, parent_run_id)
        )
        monkeypatch.setattr(pairs, "generate_and_select_on_ray", self._pairs)
        monkeypatch.setattr(translator, "train_translator_on_ray", self._train)

    def stages(self) -> list[str]:
        return [stage for stage, _, _ in self.calls]

    def config(self, stage):
        return next(cfg for s, cfg, _ in self.calls if s == stage)

    def _start(self, stage, cfg, parent_run_id, run_name):
        from scenimefy.distributed.tracking import find_or_create_run

        self.calls.append((stage, cfg, parent_run_id))
        if stage in self.fail:
            raise KeyboardInterrupt(f"{stage} interrupted")
        return find_or_create_run(cfg.run.mlflow_tracking_uri, cfg.run.mlflow_experiment, run_name, {}, parent_run_id)

    def _stylegan(self, stage, cfg, parent_run_id):
        from scenimefy.distributed.stylegan import StyleGANOutcome, snapshot_path_of

        run_id = self._start(stage, cfg, parent_run_id, f"{cfg.run.name}-{stage}")
        path = snapshot_path_of(cfg, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{stage} v{self.version}")
        return StyleGANOutcome(str(path.parent), str(path), "ckpt", 4, 16, run_id, cfg.run.mlflow_tracking_uri)

    def _pairs(self, cfg, parent_run_id=""):
        from scenimefy.distributed.pairs import pairs_dir_of, stage_dir_of

        run_id = self._start(PAIRS, cfg, parent_run_id, f"{cfg.run.name}-pairs")
        selected = pairs_dir_of(cfg)
        for side in ("trainA", "trainB"):
            (selected / side).mkdir(parents=True, exist_ok=True)
            (selected / side / "000000.png").write_text(side)
        (stage_dir_of(cfg) / "manifest.parquet").write_text("manifest")
        return {"pairs_dir": str(selected), "mlflow_run_id": run_id}

    def _train(self, cfg, parent_run_id=""):
        from scenimefy.distributed.cluster import run_dir_of

        run_id = self._start(TRAIN, cfg, parent_run_id, cfg.run.name)
        (run_dir_of(cfg) / "generator.pt").write_text("G")
        return {"mlflow_run_id": run_id}


@pytest.fixture
def drivers(monkeypatch):
    return FakeDrivers(monkeypatch)


# ----------------------------------------------------------------------------------------
# Wiring


def test_each_stage_reads_the_previous_stages_outputs(drivers, tmp_path, tracking_uri):
    from scenimefy.distributed.pairs import pairs_dir_of
    from scenimefy.distributed.stylegan import snapshot_path_of

    cfg = _cfg(tmp_path, tracking_uri)
    outcome = run_pipeline(cfg, log=lambda line: None)
    assert drivers.stages() == list(STAGES)
    g_s, g_t = str(snapshot_path_of(cfg, PRETRAIN)), str(snapshot_path_of(cfg, FINETUNE))
    assert drivers.config(FINETUNE).finetune.source_checkpoint == g_s
    assert (drivers.config(PAIRS).pairs.source_checkpoint, drivers.config(PAIRS).pairs.target_checkpoint) == (g_s, g_t)
    assert drivers.config(TRAIN).data.pairs == str(pairs_dir_of(cfg))
    assert cfg.pairs.source_checkpoint == ""  # the caller's config is not modified
    assert outcome.generator == str(tmp_path / "runs" / "pipe" / "generator.pt") and Path(outcome.generator).is_file()
    assert [r.action for r in outcome.stages] == ["ran"] * 4

    record = yaml.safe_load(record_path_of(cfg, PAIRS).read_text())
    assert record["outputs"]["pairs"] == str(pairs_dir_of(cfg))
    assert record["config"]["pairs"]["target_checkpoint"] == g_t  # the config it ran with, inputs wired
    assert (
        record["inputs"]["pairs.source_checkpoint"]["path"] == g_s
        and len(record["inputs"]["pairs.source_checkpoint"]["digest"]) == 16
    )
    assert record["facts"]["mlflow_run_id"]
    assert not list(record_path_of(cfg, PAIRS).parent.glob(".*"))  # written atomically: no temporary left


def test_given_checkpoints_skip_the_stages_that_make_them(drivers, tmp_path, tracking_uri):
    lhq = tmp_path / "lhq-220000.pt"
    lhq.write_text("authors' G_s")
    cfg = _cfg(tmp_path, tracking_uri, f"pairs.source_checkpoint={lhq}")
    run_pipeline(cfg, log=lambda line: None)
    assert drivers.stages() == [FINETUNE, PAIRS, TRAIN]  # no stage 0
    assert drivers.config(FINETUNE).finetune.source_checkpoint == str(lhq)  # one G_s for stages 1 and 2
    assert drivers.config(PAIRS).pairs.source_checkpoint == str(lhq)

    plan = plan_pipeline(_cfg(tmp_path, tracking_uri, f"data.pairs={tmp_path}"))
    assert [p.stage for p in plan.stages] == [TRAIN]  # pairs given: stages 0-2 are not needed
    assert plan.describe()[0] == "pretrain: not run (not needed)"


def test_explicit_stages_and_what_they_need(drivers, tmp_path, tracking_uri):
    with pytest.raises(
        ConfigError,
        match=r"stage finetune needs G_s.*set finetune.source_checkpoint or pairs.source_checkpoint, or add pretrain",
    ):
        plan_pipeline(_cfg(tmp_path, tracking_uri, "pipeline.stages=finetune,pairs,train"))
    with pytest.raises(
        ConfigError, match=r"unknown stage\(s\) finetuning; valid stages: pretrain, finetune, pairs, train"
    ):
        plan_pipeline(_cfg(tmp_path, tracking_uri, "pipeline.stages=finetuning"))
    with pytest.raises(ConfigError, match=r"includes pairs, but its output pairs is given \(data.pairs="):
        plan_pipeline(_cfg(tmp_path, tracking_uri, "pipeline.stages=pairs,train", f"data.pairs={tmp_path}"))
    with pytest.raises(ConfigError, match="G_s is one generator"):
        plan_pipeline(_cfg(tmp_path, tracking_uri, "finetune.source_checkpoint=a.pt", "pairs.source_checkpoint=b.pt"))

    run_pipeline(_cfg(tmp_path, tracking_uri, "pipeline.stages=pretrain"), log=lambda line: None)
    assert drivers.stages() == [PRETRAIN]
    drivers.calls.clear()
    run_pipeline(
        _cfg(tmp_path, tracking_uri, "pipeline.stages=finetune,pairs"), log=lambda line: None
    )  # G_s: the earlier run's
    assert drivers.stages() == [FINETUNE, PAIRS]


# ----------------------------------------------------------------------------------------
# Skipping, changed settings, interrupted stages


def test_rerun_skips_a_finished_stage(drivers, tmp_path, tracking_uri):
    cfg = _cfg(tmp_path, tracking_uri)
    run_pipeline(cfg, log=lambda line: None)
    drivers.calls.clear()
    lines: list[str] = []
    outcome = run_pipeline(
        _cfg(tmp_path, tracking_uri, "pretrain.log_every_kimg=0.1"), log=lines.append
    )  # a logging-only change
    assert drivers.calls == []  # no driver called again
    assert [r.action for r in outcome.stages] == ["skipped"] * 4
    skipped = [line for line in lines if ": skipped, finished earlier with the same settings (record " in line]
    assert len(skipped) == 4 and "pipeline/pretrain.yaml" in skipped[0]


def test_changed_settings_of_a_finished_stage_name_the_keys(drivers, tmp_path, tracking_uri):
    run_pipeline(_cfg(tmp_path, tracking_uri), log=lambda line: None)
    drivers.calls.clear()
    changed = _cfg(tmp_path, tracking_uri, "pretrain.lr=0.001", "pretrain.total_kimg=0.8")
    expected = (
        r"stage pretrain of run 'pipe' finished with other settings \(pretrain.lr: 0.002 -> 0.001; "
        r"pretrain.total_kimg: 0.4 -> 0.8; record .*pipe/pipeline/pretrain.yaml\). "
        r"Start over under a new run.name=.*--rerun pretrain"
    )
    with pytest.raises(ValueError, match=expected):
        run_pipeline(changed, log=lambda line: None)
    assert drivers.calls == []  # refused before any stage ran


def test_execution_only_changes_do_not_refuse_a_finished_stage(drivers, tmp_path, tracking_uri):
    run_pipeline(_cfg(tmp_path, tracking_uri), log=lambda line: None)
    drivers.calls.clear()
    execution_only = [
        "translator.compile=true", "translator.compile_mode=reduce-overhead", "translator.channels_last=true",
        "translator.log_every_steps=5", "translator.checkpoint_every_steps=30", "translator.keep_checkpoints=3",
        "finetune.log_every_steps=0", "finetune.checkpoint_every_steps=0", "pretrain.sample_every_kimg=0",
        "pairs.chunk_size=7", "pairs.batch_size=3", "pairs.generator_actors=2", "run.cpus_per_worker=2",
        "run.torch_threads=2", "run.max_failures=0", "data.cache_dir=/elsewhere", "evaluate.every_epochs=1",
    ]  # fmt: skip
    outcome = run_pipeline(_cfg(tmp_path, tracking_uri, *execution_only), log=lambda line: None)
    assert drivers.calls == [] and [r.action for r in outcome.stages] == ["skipped"] * 4


@pytest.mark.parametrize(
    "change, stage, diff",
    [
        ("translator.lr=0.001", TRAIN, "translator.lr: 0.0002 -> 0.001"),
        ("translator.precision=bf16", TRAIN, "translator.precision: 'fp32' -> 'bf16'"),
        ("data.crop_size=32", TRAIN, "data.crop_size: 64 -> 32"),
        ("pairs.bce_threshold=4", PAIRS, "pairs.bce_threshold: 5.0 -> 4.0"),
        ("priors.mask2former=m2f", PAIRS, "priors.mask2former: 'facebook/mask2former-swin-base-ade-semantic' -> 'm2f'"),
        ("finetune.lambda_patch=0.1", FINETUNE, "finetune.lambda_patch: 0.05 -> 0.1"),
        ("stylegan.n_mlp=3", PRETRAIN, "stylegan.n_mlp: 2 -> 3"),
        ("run.num_workers=3", PRETRAIN, "run.num_workers: 2 -> 3"),  # the global batch of stages 0, 1 and 3
    ],
)
def test_a_results_change_refuses_the_finished_stage_that_reads_it(
    drivers, tmp_path, tracking_uri, change, stage, diff
):
    run_pipeline(_cfg(tmp_path, tracking_uri), log=lambda line: None)
    drivers.calls.clear()
    with pytest.raises(
        ValueError, match=rf"stage {stage} of run 'pipe' finished with other settings \({re.escape(diff)};"
    ):
        run_pipeline(_cfg(tmp_path, tracking_uri, change), log=lambda line: None)
    assert drivers.calls == []


def test_stage_settings_are_the_results_fields_of_what_the_stage_reads():
    from scenimefy.config import RESULTS, field_infos
    from scenimefy.distributed.pipeline import settings_keys

    infos = field_infos()
    train, pairs = set(settings_keys(TRAIN)), set(settings_keys(PAIRS))
    assert {"translator.lr", "translator.precision", "run.seed", "run.num_workers", "data.pairs", "data.flip"} <= train
    execution = {"translator.compile_mode", "translator.channels_last", "translator.compile", "data.cache_dir",
                 "run.mlflow_tracking_uri", "run.name", "pairs.bce_threshold", "evaluate.every_epochs"}  # fmt: skip
    assert not execution & train
    assert {"pairs.bce_threshold", "pairs.source_checkpoint", "priors.mask2former"} <= pairs
    assert not {"pairs.chunk_size", "pairs.batch_size", "run.seed", "priors.clip_model"} & pairs
    assert "priors.clip_model" in settings_keys(FINETUNE) and "priors.mask2former" not in settings_keys(FINETUNE)
    assert "data.photos" in settings_keys(PRETRAIN) and "data.load_size" not in settings_keys(PRETRAIN)
    for stage in STAGES:
        assert all(infos[k].affects == RESULTS for k in settings_keys(stage))


def test_a_record_written_before_a_key_was_renamed_compares_under_the_new_name(monkeypatch, tmp_path):
    from scenimefy import config
    from scenimefy.config import to_dict
    from scenimefy.distributed.pipeline import StagePlan, settings_diff, stage_settings

    monkeypatch.setitem(config.RENAMED_KEYS, "finetune.learning_rate", "finetune.lr")  # an old name of a results key
    old = to_dict(load_config("tiny"))
    old["finetune"]["learning_rate"] = old["finetune"].pop("lr")
    assert stage_settings(old, FINETUNE)["finetune.lr"] == 0.002
    plan = StagePlan(FINETUNE, load_config("tiny", ["finetune.lr=0.001"]), {}, {})
    assert settings_diff(plan, {"config": old}) == ["finetune.lr: 0.002 -> 0.001"]
    old["finetune"]["log_every"] = old["finetune"].pop("log_every_steps")  # a real rename (an execution key)
    assert settings_diff(StagePlan(FINETUNE, load_config("tiny"), {}, {}), {"config": old}) == []


def test_rerun_of_a_stage_then_later_stages_see_its_new_outputs(drivers, tmp_path, tracking_uri):
    run_pipeline(_cfg(tmp_path, tracking_uri), log=lambda line: None)
    drivers.calls.clear()
    drivers.version = 1  # the resumed pretraining continues to a longer schedule: a new G_s
    longer = _cfg(tmp_path, tracking_uri, "pretrain.total_kimg=0.8")
    with pytest.raises(
        ValueError,
        match=r"stage finetune .*finetune.source_checkpoint: contents of .*pretrain/stylegan.pt changed since",
    ):
        run_pipeline(longer, rerun=[PRETRAIN], log=lambda line: None)
    assert drivers.stages() == [PRETRAIN]
    drivers.calls.clear()
    run_pipeline(longer, rerun=[FINETUNE, PAIRS, TRAIN], log=lambda line: None)  # pretrain's new record: skipped
    assert drivers.stages() == [FINETUNE, PAIRS, TRAIN]
    with pytest.raises(ConfigError, match="--rerun tune: not a stage of this pipeline run"):
        run_pipeline(longer, rerun=["tune"], log=lambda line: None)


def test_an_interrupted_stage_runs_its_driver_again(drivers, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tmp_path, tracking_uri, name="interrupted")
    drivers.fail = {PAIRS}
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, log=lambda line: None)
    assert drivers.stages() == [PRETRAIN, FINETUNE, PAIRS]
    assert not record_path_of(cfg, PAIRS).exists() and record_path_of(cfg, FINETUNE).exists()
    parent = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("scenimefy").experiment_id],
        "tags.`scenimefy.run_name` = 'interrupted-pipeline'",
    )[0]
    assert parent.info.status == "KILLED"

    drivers.fail, drivers.calls = set(), []
    lines: list[str] = []
    run_pipeline(cfg, log=lines.append)
    assert drivers.stages() == [PAIRS, TRAIN]  # the drivers resume by run name
    assert any(line.startswith("[pipeline] pairs: running, no completion record") for line in lines)

    os.remove(tmp_path / "runs" / "interrupted" / "generator.pt")
    drivers.calls.clear()
    run_pipeline(cfg, log=lines.append)
    assert drivers.stages() == [TRAIN]  # a finished stage whose output is gone runs again


# ----------------------------------------------------------------------------------------
# MLflow and the command line


def test_one_parent_mlflow_run_with_a_child_per_stage(drivers, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tmp_path, tracking_uri, name="tracked")
    first = run_pipeline(cfg, log=lambda line: None)
    second = run_pipeline(cfg, log=lambda line: None)  # every stage skipped
    assert second.mlflow_run_id == first.mlflow_run_id  # the same parent on a rerun
    client = MlflowClient(tracking_uri)
    parent = client.get_run(first.mlflow_run_id)
    assert parent.info.run_name == "tracked-pipeline" and parent.info.status == "FINISHED"
    assert parent.data.params["pretrain.total_kimg"] == "0.4"
    assert {parent_id for _, _, parent_id in drivers.calls} == {first.mlflow_run_id}  # every driver got the parent
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{first.mlflow_run_id}'")
    assert sorted(r.info.run_name for r in children) == [
        "tracked",
        "tracked-finetune",
        "tracked-pairs",
        "tracked-pretrain",
    ]
    records = {a.path for a in client.list_artifacts(first.mlflow_run_id, "pipeline")}
    assert records == {f"pipeline/{s}.yaml" for s in STAGES}
    assert "pipeline/pretrain_seconds" in parent.data.metrics


def test_cli_dry_run_prints_the_plan_and_errors_are_one_line(tmp_path, capsys):
    from scenimefy.commands.cli import main

    assert (
        main(
            [
                "pipeline",
                "--config",
                "tiny",
                "--dry-run",
                f"run.output_dir={tmp_path}",
                "pairs.source_checkpoint=lhq.pt",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "# pretrain: not run, G_s given (lhq.pt)" in out
    assert "# finetune: planned (reads finetune.source_checkpoint=lhq.pt;" in out
    assert main(["pipeline", "--config", "tiny", "--stages", "pairs,bogus", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown stage(s) bogus" in err


def test_job_entrypoint_runs_the_pipeline_and_reruns_a_stage(drivers, tmp_path, tracking_uri, capsys):
    from scenimefy.commands.jobs_runner import main as job_main
    from scenimefy.commands.jobs_runner import parse_result

    argv = [
        "--config",
        "tiny",
        f"run.output_dir={tmp_path / 'runs'}",
        "run.name=job",
        f"run.mlflow_tracking_uri={tracking_uri}",
    ]
    assert job_main("pipeline", argv) == 0
    assert job_main("pipeline", ["--rerun", "pairs,train", *argv]) == 0
    assert drivers.stages() == [*STAGES, PAIRS, TRAIN]
    result = parse_result(capsys.readouterr().out)
    assert [(s["stage"], s["action"]) for s in result["stages"]] == [
        (PRETRAIN, "skipped"),
        (FINETUNE, "skipped"),
        (PAIRS, "ran"),
        (TRAIN, "ran"),
    ]


def test_demo_settings_plan_all_four_stages_on_priors_written_once(tmp_path):
    from scenimefy.demo.run import DEMO_OVERRIDES, write_demo_priors

    priors = write_demo_priors(tmp_path / "priors")
    assert priors.offline and priors.clip_model.startswith(
        "local-dir:"
    )  # Ray workers build the tiny CLIP from the folder
    assert not (tmp_path / "priors" / "mask2former").exists()  # the demo trains its own (write_demo_segmenter)
    stamp = (tmp_path / "priors" / "clip" / "open_clip_config.json").stat().st_mtime_ns
    assert write_demo_priors(tmp_path / "priors") == priors  # a rerun reads the record
    assert (tmp_path / "priors" / "clip" / "open_clip_config.json").stat().st_mtime_ns == stamp
    cfg = load_config("tiny", [f"run.output_dir={tmp_path}", "data.photos=p", "data.anime=a", *DEMO_OVERRIDES])
    assert [p.stage for p in plan_pipeline(cfg).stages] == list(STAGES)


# ----------------------------------------------------------------------------------------
# The real pipeline on a local Ray, tiny sizes


@pytest.mark.ray
def test_real_pipeline_end_to_end_then_a_rerun_skips_every_stage(tmp_path):
    """Stages 2-3 on a local Ray (stages 0-1 given, as with the authors' generators; their drivers
    have their own end-to-end tests), then the same command again: both skipped, no Ray needed."""
    import ray
    from local_ray import init_local_ray
    from mlflow.tracking import MlflowClient
    from pairs_fixtures import write_pair_checkpoints

    from scenimefy.demo.priors import write_tiny_mask2former
    from scenimefy.demo.scenes import write_demo_dataset
    from scenimefy.distributed.data import match_pairs
    from scenimefy.inference.translate import load_translator

    g_s, g_t = write_pair_checkpoints(tmp_path)
    data = write_demo_dataset(
        str(tmp_path / "data"), n_photos=8, n_anime=8, n_pairs=0, n_test=0, size=32, seed=0
    )  # 2 batches per worker shard: no data epoch restarts in 2 steps
    cfg = load_config(
        "tiny",
        [
            f"run.output_dir={tmp_path / 'runs'}",
            "run.name=e2e",
            "run.num_workers=2",
            f"data.photos={data['photos']}",
            f"data.anime={data['anime']}",
            f"pairs.source_checkpoint={g_s}",
            f"pairs.target_checkpoint={g_t}",
            f"priors.mask2former={write_tiny_mask2former(tmp_path / 'mask2former')}",
            "priors.offline=true",
            "pairs.num_candidates=8", "pairs.bce_threshold=10", "pairs.min_classes=1", "pairs.mean_latent_samples=64",
            "pairs.generator_group=4", "pairs.batch_size=4",
            "data.load_size=32", "data.crop_size=32", "translator.ngf=8", "translator.ndf=8",
            "translator.num_patches=16", "translator.head_dim=16", "translator.steps_per_epoch=2",
            "translator.max_steps=2", "translator.checkpoint_every_steps=2",
        ],
    )  # fmt: skip
    init_local_ray()
    try:
        first = run_pipeline(cfg, log=lambda line: None)
    finally:
        ray.shutdown()
    assert [(r.stage, r.action) for r in first.stages] == [(PAIRS, "ran"), (TRAIN, "ran")]
    assert load_translator(first.generator, "cpu") is not None
    _fs, matched, _unmatched = match_pairs(first.outputs["pairs"])
    assert len(matched) == 8  # stage 3 trained on stage 2's selection
    record = yaml.safe_load(record_path_of(cfg, TRAIN).read_text())
    assert record["config"]["data"]["pairs"] == first.outputs["pairs"] and record["facts"]["step"] == 2

    client = MlflowClient(first.tracking_uri)
    parent = client.get_run(first.mlflow_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{first.mlflow_run_id}'")
    assert sorted(r.info.run_name for r in children) == ["e2e", "e2e-pairs"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"

    second = run_pipeline(cfg, log=lambda line: None)  # Ray is not running: a skip must not need it
    assert [r.action for r in second.stages] == ["skipped"] * 2 and second.mlflow_run_id == first.mlflow_run_id
    assert not ray.is_initialized()
