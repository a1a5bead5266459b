"""End to end: the translator on a local Ray cluster with 2 CPU workers, MLflow, resume."""

import json

import pytest
import torch
from ray.train import UserCallback

pytestmark = pytest.mark.ray


def reports_to_file(path: str) -> UserCallback:
    """A Train callback appending what the controller receives per report (rank 0's metrics,
    checkpoint or not) to a JSON-lines file: what TuneReportCallback hands to Tune. Defined in a
    function so that it pickles by value (the controller cannot import this test module)."""

    class ReportsToFile(UserCallback):
        def after_report(self, run_context, metrics, checkpoint) -> None:
            with open(path, "a") as f:
                f.write(json.dumps({**metrics[0], "has_checkpoint": checkpoint is not None}) + "\n")

    return ReportsToFile()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from scenimefy.demo.scenes import write_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return write_demo_dataset(str(root), n_photos=12, n_anime=12, n_pairs=12, n_test=2, size=32, seed=0)


def _cfg(tmp_path, demo_data, *extra):
    from scenimefy.config import load_config

    return load_config(
        "tiny",
        [
            f"run.output_dir={tmp_path}",
            "run.name=ray-e2e",
            "run.num_workers=2",
            "run.cpus_per_worker=1",
            "data.load_size=32",
            "data.crop_size=32",
            f"data.photos={demo_data['photos']}",
            f"data.anime={demo_data['anime']}",
            f"data.pairs={demo_data['pairs']}",
            "translator.ngf=8",
            "translator.ndf=8",
            "translator.num_patches=16",
            "translator.head_dim=16",
            "translator.batch_size_per_worker=2",
            "translator.steps_per_epoch=3",
            "translator.log_every_steps=1",
            "translator.checkpoint_every_steps=2",
            *extra,
        ],
    )


def test_two_workers_stay_identical_stop_and_resume(ray_local, demo_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.translator import train_translator_on_ray
    from scenimefy.inference.translate import load_translator

    reports = tmp_path / "reports.jsonl"
    first = train_translator_on_ray(
        _cfg(tmp_path, demo_data, "translator.max_steps=4"), callbacks=[reports_to_file(str(reports))]
    )
    assert first.step == 4
    # checkpoints at step 2 (interval), 3 (epoch end) and 4 (stop); only step 3 closes an epoch,
    # so only its report carries `epoch`, the key Tune's ASHA counts results by
    received = [json.loads(line) for line in reports.read_text().splitlines()]
    assert [(r["step"], r.get("epoch"), r["has_checkpoint"]) for r in received] == [
        (2.0, None, True),
        (3.0, 1.0, True),
        (4.0, None, True),
    ]
    state = torch.load(f"{first.checkpoint}/state.pt", weights_only=True)
    assert state["progress"]["step"] == 4
    assert len(first.rank_checksums) == 2 and first.rank_checksums[0] == first.rank_checksums[1]

    second = train_translator_on_ray(_cfg(tmp_path, demo_data, "translator.max_steps=6"))
    assert second.step == 6
    assert second.resumed_from_step == 4  # the rerun with the same name continued from the checkpoint
    assert len(second.rank_checksums) == 2 and second.rank_checksums[0] == second.rank_checksums[1]
    assert second.mlflow_run_id == first.mlflow_run_id  # one MLflow run per run name
    summary = torch.load(f"{second.checkpoint}/state.pt", weights_only=True)
    assert summary["progress"]["step"] == 6

    # the generator snapshot loads for inference
    G = load_translator(second.generator, "cpu")
    assert G(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)

    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.data.params["translator.lambda_style"] == "0.05"
    history = client.get_metric_history(first.mlflow_run_id, "loss_G")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in client.list_artifacts(first.mlflow_run_id)}
    assert "generator.pt" in artifacts and "config.yaml" in artifacts
