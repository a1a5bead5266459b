"""`scenimefy evaluate` and the per-epoch evaluator: FID/KID, L_BCE, objective, report, MLflow.

FID/KID themselves are tested in test_evaluation.py and the L_BCE identity in
test_segmentation.py; here the pipelines around them: a tiny random feature network stands in
for Inception, and the tiny random Mask2Former from tests/tiny_priors.py for the real one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_priors import TinyFeatures
from torch import nn

from scenimefy.config import load_config
from scenimefy.data.decode import list_image_files, load_image, resize_square
from scenimefy.data.images import from_uint8
from scenimefy.evaluation.metrics import DistributionMetrics

SIZE = 32


class IdentityGenerator(nn.Module):
    """G(x) = x; records the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # a device to read
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from scenimefy.demo.scenes import write_demo_dataset

    root = tmp_path_factory.mktemp("evaluate")
    return write_demo_dataset(str(root / "demo"), n_photos=0, n_anime=6, n_pairs=0, n_test=5, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    from tiny_priors import tiny_priors_config

    return tiny_priors_config(tmp_path_factory.mktemp("priors"), clip=False, lpips=False, mask2former=True)


@pytest.fixture(scope="module")
def scorer(priors):
    from scenimefy.priors.segmentation import SemanticScorer

    return SemanticScorer.from_priors(priors, "cpu", precision="fp32")


def _cfg(demo, priors=None, *extra):
    overrides = [f"evaluate.photos={demo['test']}", f"data.anime={demo['anime']}", f"evaluate.size={SIZE}", *extra]
    if priors is not None:
        overrides += [f"priors.{k}={v}" for k, v in vars(priors).items()]
    return load_config(None, overrides)


def _entropy_term(scorer, photos: list[str]) -> torch.Tensor:
    """L_BCE of each photo with itself: mean over pixels of log Σ_c exp(S_c) − max_c S_c (test_segmentation)."""
    x = from_uint8(np.stack([resize_square(load_image(p), SIZE) for p in photos]))
    scores = scorer(x)
    return (scores.exp().sum(dim=1).log() - scores.max(dim=1).values).mean(dim=(1, 2))


# ----------------------------------------------------------------------------------------
# The per-epoch evaluator (rank 0 of a training run)


def test_epoch_evaluator_scores_fid_kid_l_bce_and_the_objective(demo, scorer):
    from scenimefy.evaluation.scoring import make_epoch_evaluator

    # The reference set is the held-out photos themselves and G is the identity: FID ~ 0, and
    # each photo's L_BCE with its "translation" is its scores' entropy term.
    cfg = _cfg(
        demo,
        None,
        "evaluate.every_epochs=1",
        f"data.anime={demo['test']}",
        "evaluate.bce_weight=10",
        "evaluate.batch_size=2",
    )
    evaluate = make_epoch_evaluator(cfg, feature_extractor=TinyFeatures(), scorer=scorer)
    G = IdentityGenerator().train()
    out = evaluate(G, 1)
    assert {"fid", "kid", "l_bce", "pixel_agreement", "objective"} <= set(out)
    assert abs(out["fid"]) < 1e-3 and abs(out["kid"]) < 0.05
    expected = _entropy_term(scorer, list_image_files(demo["test"])).mean().item()
    assert out["l_bce"] == pytest.approx(expected, rel=1e-5)
    assert out["pixel_agreement"] == 1.0
    assert out["objective"] == pytest.approx(out["fid"] + 10 * out["l_bce"])
    assert G.modes and not any(G.modes) and G.training  # translated in eval mode, mode restored
    assert len(G.modes) == 3  # 5 photos in batches of evaluate.batch_size=2

    # a second call reuses the anime features and gives the same numbers
    assert evaluate(G, 2)["objective"] == pytest.approx(out["objective"])


def test_epoch_evaluator_with_one_metric_off(demo, scorer):
    from scenimefy.evaluation.scoring import make_epoch_evaluator

    only_fid = make_epoch_evaluator(
        _cfg(demo, None, "evaluate.every_epochs=1", "evaluate.semantic=false"), feature_extractor=TinyFeatures()
    )
    out = only_fid(IdentityGenerator(), 1)
    assert "l_bce" not in out and out["objective"] == out["fid"]
    only_bce = make_epoch_evaluator(
        _cfg(demo, None, "evaluate.every_epochs=1", "evaluate.fid=false", "evaluate.bce_weight=2"), scorer=scorer
    )
    out = only_bce(IdentityGenerator(), 1)
    assert "fid" not in out and out["objective"] == pytest.approx(2 * out["l_bce"])


def test_epoch_evaluator_is_off_without_photos_or_interval(demo):
    from scenimefy.evaluation.scoring import make_epoch_evaluator

    assert make_epoch_evaluator(_cfg(demo)) is None  # every_epochs = 0
    assert make_epoch_evaluator(load_config(None, ["evaluate.every_epochs=1"])) is None  # no photos


def test_held_out_subset_is_the_first_max_images(demo):
    from scenimefy.evaluation.scoring import held_out_photos

    cfg = _cfg(demo, None, "evaluate.max_images=3")
    assert held_out_photos(cfg.evaluate) == list_image_files(demo["test"])[:3]


def test_empty_or_missing_folders_are_clear_errors(demo, tmp_path):
    from scenimefy.evaluation.scoring import make_epoch_evaluator

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="evaluate.photos=.*holds no images"):
        make_epoch_evaluator(_cfg(demo, None, "evaluate.every_epochs=1", f"evaluate.photos={empty}"))
    with pytest.raises(ValueError, match="does not exist"):
        make_epoch_evaluator(_cfg(demo, None, "evaluate.every_epochs=1", f"evaluate.photos={tmp_path / 'nope'}"))
    with pytest.raises(ValueError, match="anime reference folder .* holds 0 image"):
        make_epoch_evaluator(_cfg(demo, None, "evaluate.every_epochs=1", f"data.anime={empty}"))
    with pytest.raises(ValueError, match="evaluate.fid=true and/or evaluate.semantic=true"):
        make_epoch_evaluator(
            _cfg(demo, None, "evaluate.every_epochs=1", "evaluate.fid=false", "evaluate.semantic=false")
        )


def test_translations_are_matched_to_photos_by_stem(demo, tmp_path):
    from scenimefy.evaluation.scoring import pair_by_stem

    photos = list_image_files(demo["test"])
    translations = [str(tmp_path / (Path(p).stem + ".png")) for p in photos]
    assert pair_by_stem(photos, translations[::-1]) == list(zip(photos, translations))
    # a subset of photos (evaluate.max_images) ignores the other translations only when asked
    assert pair_by_stem(photos[:2], translations, subset=True) == list(zip(photos[:2], translations[:2]))
    with pytest.raises(ValueError, match=r"5 photos but 4 translations .* 1 photos without a translation: 000004"):
        pair_by_stem(photos, translations[:4])


# ----------------------------------------------------------------------------------------
# `scenimefy evaluate` on a local Ray cluster (L_BCE on Ray Data actors)


@pytest.fixture
def tiny_fid(monkeypatch):
    """FID/KID on the driver with the tiny feature network instead of Inception."""
    import scenimefy.distributed.evaluate as driver

    monkeypatch.setattr(
        driver,
        "DistributionMetrics",
        lambda priors, device: DistributionMetrics(feature_extractor=TinyFeatures(), device=device),
    )


def _parser():
    from scenimefy.commands.evaluate import add_evaluate_commands

    parser = argparse.ArgumentParser()
    add_evaluate_commands(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.ray
def test_evaluate_a_checkpoint_writes_the_report_and_an_mlflow_child_run(
    ray_local, tiny_fid, demo, priors, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.tracking import find_or_create_run, resolve_tracking_uri
    from scenimefy.inference.translate import save_translator_snapshot
    from scenimefy.models.translator import ResnetGenerator

    torch.manual_seed(0)
    checkpoint = save_translator_snapshot(tmp_path / "generator.pt", ResnetGenerator(ngf=8, n_blocks=1), {})
    overrides = [
        f"evaluate.photos={demo['test']}",
        f"data.anime={demo['anime']}",
        f"evaluate.size={SIZE}",
        "evaluate.batch_size=2",
        f"run.output_dir={tmp_path / 'runs'}",
        "run.name=trained",
        "evaluate.max_images=4",
        "run.use_gpu=false",  # the default preset (paper) asks for GPUs
        *[f"priors.{k}={v}" for k, v in vars(priors).items()],
    ]
    # the training run this checkpoint came from, already in the MLflow store
    uri = resolve_tracking_uri("", tmp_path / "runs" / "trained")
    training_run = find_or_create_run(uri, "scenimefy", "trained")

    args = _parser().parse_args(["evaluate", "--checkpoint", checkpoint, "--out", str(tmp_path / "eval"), *overrides])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "evaluated 4 of 4 photo(s): fid" in printed and "report:" in printed

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["num_photos"] == report["num_translated"] == len(report["per_image"]) == 4
    assert report["num_real"] == 6 and report["num_fake"] == 4 and report["size"] == SIZE
    assert np.isfinite(report["fid"]) and 4.0 < report["l_bce"] < 5.2 and report["num_scored"] == 4
    assert report["objective"] == pytest.approx(report["fid"] + 10.0 * report["l_bce"])
    assert [Path(r["photo"]).name for r in report["per_image"]] == [
        Path(p).name for p in list_image_files(demo["test"])[:4]
    ]
    assert len(list_image_files(tmp_path / "eval" / "translations")) == 4

    client = MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("scenimefy").experiment_id],
        filter_string="tags.`mlflow.runName` = 'trained-eval'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["mlflow.parentRunId"] == training_run
    assert run.data.metrics["l_bce"] == pytest.approx(report["l_bce"]) and run.data.metrics["fid"] == pytest.approx(
        report["fid"]
    )
    assert "report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.ray
def test_existing_translations_identical_to_the_photos_score_their_entropy_term(
    ray_local, tiny_fid, demo, priors, scorer, tmp_path
):
    from scenimefy.distributed.evaluate import evaluate_translator

    translations = tmp_path / "translations"
    shutil.copytree(demo["test"], translations)
    cfg = _cfg(
        demo,
        priors,
        f"run.output_dir={tmp_path / 'runs'}",
        "evaluate.fid=false",
        "pairs.segmenter_actors=2",
        "evaluate.batch_size=2",
    )
    outcome = evaluate_translator(cfg, out_dir=str(tmp_path / "eval"), translations=str(translations))
    per_image = np.array([r["l_bce"] for r in outcome.report["per_image"]])
    photos = list_image_files(demo["test"])
    np.testing.assert_allclose(
        per_image, _entropy_term(scorer, photos).numpy(), rtol=1e-5
    )  # batched on 2 actors, in order
    assert [r["pixel_agreement"] for r in outcome.report["per_image"]] == [1.0] * len(photos)
    assert "fid" not in outcome.report and outcome.report["objective"] == pytest.approx(10.0 * outcome.report["l_bce"])


def test_bad_inputs_fail_before_any_work(demo, tmp_path):
    from scenimefy.distributed.evaluate import evaluate_translator

    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in list_image_files(demo["test"])[:3]:
        shutil.copy(p, partial)
    cfg = _cfg(demo)
    out = str(tmp_path / "eval")
    with pytest.raises(ValueError, match="evaluate.photos=.*holds no images"):
        evaluate_translator(_cfg(demo, None, f"evaluate.photos={empty}"), out_dir=out, translations=str(partial))
    with pytest.raises(
        ValueError, match=r"5 photos but 3 translations .* 2 photos without a translation: 000003, 000004"
    ):
        evaluate_translator(cfg, out_dir=out, translations=str(partial))
    with pytest.raises(ValueError, match="translations folder .* holds no images"):
        evaluate_translator(cfg, out_dir=out, translations=str(empty))
    with pytest.raises(ValueError, match="give a checkpoint .* or a folder of existing translations"):
        evaluate_translator(cfg, out_dir=out)
    with pytest.raises(ValueError, match="not a translator checkpoint|no such file"):
        evaluate_translator(cfg, out_dir=out, checkpoint=str(tmp_path / "missing.pt"))


def test_cli_requires_a_checkpoint_or_translations(demo, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["evaluate", "--out", "x"])
    args = _parser().parse_args(
        ["evaluate", "--translations", "t", "--out", "o", "--dry-run", f"evaluate.photos={demo['test']}"]
    )
    assert args.func(args) == 0
    assert "# held-out photos: 5" in capsys.readouterr().out
