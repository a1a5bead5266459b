"""MLflow tracking: one run per run name, and a SQLite store that keeps its artifacts with it."""

from pathlib import Path

from scenimefy.distributed.tracking import MlflowTracker, find_or_create_run, resolve_tracking_uri


def test_default_store_keeps_artifacts_under_the_run_directory_not_the_cwd(tmp_path, monkeypatch):
    run_dir, elsewhere = tmp_path / "runs" / "r1", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a Ray worker runs in some other directory
    uri = resolve_tracking_uri("", run_dir)
    assert uri == f"sqlite:///{run_dir.absolute() / 'mlflow.db'}"
    run_id = find_or_create_run(uri, "scenimefy", "r1", {"translator.lr": 2e-4})
    assert find_or_create_run(uri, "scenimefy", "r1") == run_id  # found again by its name

    note = tmp_path / "note.txt"
    note.write_text("hello")
    tracker = MlflowTracker(uri, run_id)
    tracker.log_artifact(note)
    tracker.log_metrics({"loss": 1.5, "nan": float("nan")}, step=3)
    tracker.finish()

    logged = list((run_dir / "mlartifacts").rglob("note.txt"))
    assert len(logged) == 1 and logged[0].read_text() == "hello"
    assert not (elsewhere / "mlruns").exists() and not list(elsewhere.iterdir())
    client = tracker.client
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.5]
    assert client.get_metric_history(run_id, "nan") == []  # non-finite values are not sent
    assert client.get_run(run_id).data.params == {"translator.lr": "0.0002"}
    assert Path(client.get_run(run_id).info.artifact_uri[len("file://") :]).is_relative_to(run_dir / "mlartifacts")
