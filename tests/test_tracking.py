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


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """The interrupted run logged steps 1-6, its last checkpoint was at step 3: the resumed run redoes
    steps 4-6 and must not add a second point for them."""
    uri = resolve_tracking_uri("", tmp_path / "run")
    run_id = find_or_create_run(uri, "scenimefy", "r")
    first = MlflowTracker(uri, run_id)
    for step in range(1, 7):
        first.log_metrics({"loss": float(step), "lr": 0.1}, step=step)
    first.log_metrics({"fid": 50.0}, step=0)  # a one-off summary at step 0

    resumed = MlflowTracker(uri, run_id)
    for step in range(4, 9):
        resumed.log_metrics({"loss": 10.0 * step}, step=step)  # redone steps 4-6, new steps 7-8
    resumed.log_metrics({"img_per_s": 3.0}, step=5)  # a key the first run never logged
    resumed.log_metrics({"fid": 40.0}, step=0)  # a rerun's summary still replaces the old one

    client = resumed.client
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert loss == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0), (7, 70.0), (8, 80.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "img_per_s")] == [(5, 3.0)]
    assert len(client.get_metric_history(run_id, "lr")) == 6
    assert client.get_run(run_id).data.metrics["fid"] == 40.0


def _experiments(uri):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    return {e.name: e.artifact_location for e in MlflowClient(uri).search_experiments(view_type=ViewType.ALL)}


def test_a_new_store_has_no_default_experiment_pointing_at_the_cwd(tmp_path, monkeypatch):
    run_dir, cwd = tmp_path / "runs" / "r1", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = resolve_tracking_uri("", run_dir)
    find_or_create_run(uri, "scenimefy", "r1")
    find_or_create_run(uri, "scenimefy-eval", "r1-eval")
    found = _experiments(uri)
    assert sorted(found) == ["scenimefy", "scenimefy-eval"]
    for location in found.values():
        assert Path(location[len("file://") :]).is_relative_to(run_dir / "mlartifacts"), location
    assert not list(cwd.iterdir())


def test_an_existing_store_is_left_as_it_is(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    MlflowClient(uri).search_experiments()  # someone else's store: MLflow made its Default experiment
    find_or_create_run(uri, "scenimefy", "r1")
    assert sorted(_experiments(uri)) == ["Default", "scenimefy"]
