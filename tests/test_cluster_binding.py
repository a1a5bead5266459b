"""The Ray layer's shared pieces that need no running cluster: the trainer every stage builds,
the guard around Ray Train's private loggers, and the atomic copy."""

import logging

import pytest

from scenimefy.config import load_config
from scenimefy.distributed import cluster


def test_every_stage_gets_the_same_trainer_assembly(tmp_path):
    cfg = load_config("tiny", [f"run.output_dir={tmp_path}", "run.num_workers=2", "run.cpus_per_worker=0.5"])
    from ray.train import UserCallback

    callbacks = [UserCallback()]
    trainer = cluster.torch_trainer(
        print, cfg, name="r-pretrain", train_loop_config={"a": 1}, datasets={}, keep_checkpoints=3, callbacks=callbacks
    )
    assert trainer.train_loop_config == {"a": 1}
    scaling = trainer.scaling_config
    assert (scaling.num_workers, scaling.use_gpu, scaling.resources_per_worker) == (2, False, {"CPU": 0.5})
    run = trainer.run_config
    assert run.name == "r-pretrain" and run.storage_path == f"{tmp_path}/ray"
    assert run.checkpoint_config.num_to_keep == 3 and run.failure_config.max_failures == cfg.run.max_failures
    assert run.callbacks == callbacks
    assert trainer.data_config._datasets_to_split == "all"


def test_private_ray_loggers_are_left_alone_on_a_version_the_code_does_not_know(monkeypatch, caplog):
    import ray

    monkeypatch.setattr(ray, "__version__", "9.1.0")
    monkeypatch.setattr(cluster, "_quiet_reports_warned", False)
    touched = []
    monkeypatch.setattr(logging.Logger, "setLevel", lambda self, level: touched.append(self.name))
    with caplog.at_level(logging.WARNING, logger=cluster.__name__):
        cluster.quiet_train_reports()
        cluster.quiet_train_reports()
    warnings = [r.getMessage() for r in caplog.records if r.name == cluster.__name__]
    assert len(warnings) == 1 and "Ray 9.1.0" in warnings[0]  # warned once
    assert [name for name in touched if name.startswith("ray") or name.endswith(".py")] == []


@pytest.mark.skipif(not __import__("ray").__version__.startswith("2.60."), reason="the loggers of Ray Train 2.60")
def test_report_records_of_the_known_ray_version_go_to_warnings_only():
    from ray.train.v2._internal.execution import context, storage

    # Ray Train logs each report with every metric at INFO from every worker; we print our own
    cluster.quiet_train_reports()
    for name in (context.__file__, storage.__name__):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    assert context.logger.name == context.__file__  # the name Ray gives it; a rename would unquiet it


def test_copy_atomic_replaces_the_whole_file(tmp_path):
    src, dst = tmp_path / "a.bin", tmp_path / "out" / "b.bin"
    src.write_bytes(b"new" * 1000)
    cluster.copy_atomic(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["b.bin"]  # no temporary file left behind
