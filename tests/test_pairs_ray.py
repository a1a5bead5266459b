"""End to end: stage 2 on a local Ray cluster with 2 generator + 2 Mask2Former actors, MLflow,
resume, streaming until K kept, and the translator reading the exported pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pairs_fixtures import score_seeds, write_pair_checkpoints
from PIL import Image
from tiny_priors import write_tiny_mask2former

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs-inputs")
    g_s, g_t = write_pair_checkpoints(root)
    return {"g_s": g_s, "g_t": g_t, "m2f": write_tiny_mask2former(root / "mask2former"), "out": root / "runs"}


def _cfg(inputs, name, *extra):
    from scenimefy.config import load_config

    return load_config(
        "tiny",
        [
            f"run.output_dir={inputs['out']}",
            f"run.name={name}",
            "run.torch_threads=1",
            f"pairs.source_checkpoint={inputs['g_s']}",
            f"pairs.target_checkpoint={inputs['g_t']}",
            f"priors.mask2former={inputs['m2f']}",
            "priors.offline=true",
            "pairs.mean_latent_samples=256",
            "pairs.generator_group=4",
            "pairs.batch_size=4",
            "pairs.min_classes=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def first_run(ray_local, inputs):
    """16 candidates in one chunk on 2 + 2 actors, every pair kept (threshold 10)."""
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    cfg = _cfg(
        inputs,
        "e2e",
        "pairs.num_candidates=16",
        "pairs.bce_threshold=10",
        "pairs.generator_actors=2",
        "pairs.segmenter_actors=2",
    )
    return cfg, generate_and_select_on_ray(cfg)


def test_two_actors_end_to_end(first_run):
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.data import match_pairs

    cfg, out = first_run
    assert (out.num_candidates, out.num_kept, out.num_exported, out.chunks_run) == (16, 16, 16, 1)
    manifest = pd.read_parquet(out.manifest)
    assert manifest["seed"].tolist() == list(range(16))
    assert set(manifest.columns) >= {"seed", "l_bce", "n_classes", "kept", "photo_path", "anime_path"}
    assert (
        manifest["l_bce"].dtype == np.float32
        and manifest["kept"].dtype == bool
        and manifest["n_classes"].dtype == np.int64
    )
    selection = json.loads((Path(out.pairs_dir) / "selection.json").read_text())
    assert selection["threshold"] == 10.0 and selection["pairs"] == 16 and selection["manifest"] == out.manifest
    _fs, matched, unmatched = match_pairs(out.pairs_dir)  # what the translator reads as data.pairs
    assert len(matched) == 16 and unmatched == 0
    assert Image.open(out.inspection).format == "PNG" and Image.open(out.histogram).format == "PNG"

    client = MlflowClient(out.tracking_uri)
    run = client.get_run(out.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "e2e-pairs"
    assert run.data.params["pairs.bce_threshold"] == "10.0"
    assert run.data.metrics["pairs/keep_rate"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(out.mlflow_run_id)}
    assert {"inspection.png", "scores.png", "config.yaml", "scores.txt"} <= artifacts


def test_rows_match_the_in_process_stage_at_batch_one(first_run, inputs):
    """2 actors x batch 4 on Ray == 1 process x batch 1: images bit for bit, scores to float noise."""
    from scenimefy.stages.pairs import PairGenerator, PairScorer

    cfg, out = first_run
    manifest = pd.read_parquet(out.manifest)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actors (run.torch_threads=1)
    try:
        gen = PairGenerator(
            str(inputs["g_s"]), str(inputs["g_t"]), truncation=0.7, mean_latent_samples=256, share_noise=True, group=4
        )
        scorer = PairScorer(
            {"mask2former": str(inputs["m2f"]), "offline": True}, threshold=10, min_classes=1, precision="fp32"
        )
        seeds = [0, 5, 6, 15]
        batches = list(score_seeds(gen, scorer, seeds, batch_size=1))
    finally:
        torch.set_num_threads(threads)
    root = out.stage_dir
    for seed, b in zip(seeds, batches):
        row = manifest[manifest["seed"] == seed].iloc[0]
        np.testing.assert_array_equal(np.asarray(Image.open(f"{root}/{row['photo_path']}")), b["photo"][0])
        np.testing.assert_array_equal(np.asarray(Image.open(f"{root}/{row['anime_path']}")), b["anime"][0])
        assert row["l_bce"] == pytest.approx(float(b["l_bce"][0]), abs=1e-5)
        assert row["n_classes"] == int(b["n_classes"][0])


def test_rerun_resumes_from_the_manifest_and_refuses_other_settings(first_run, inputs):
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    cfg, out = first_run
    again = generate_and_select_on_ray(cfg)  # everything is in the manifest: no chunk runs
    assert again.chunks_run == 0 and again.resumed_candidates == 16 and again.num_kept == 16
    assert again.mlflow_run_id == out.mlflow_run_id

    other = _cfg(inputs, "e2e", "pairs.num_candidates=16", "pairs.truncation=0.5")
    with pytest.raises(ValueError, match=r"holds candidates made with other settings \(truncation: 0.7 -> 0.5\)"):
        generate_and_select_on_ray(other)

    # A threshold that keeps nothing: a clear error with the distribution; the selection stays.
    strict = _cfg(inputs, "e2e", "pairs.num_candidates=16", "pairs.bce_threshold=3")
    with pytest.raises(ValueError, match=r"no pair has L_BCE < 3.0 .*L_BCE quantiles .*scenimefy select --manifest"):
        generate_and_select_on_ray(strict)
    assert len(list((Path(out.pairs_dir) / "trainA").iterdir())) == 16


def test_target_kept_streams_until_k_are_kept(first_run, inputs):
    """Threshold at the first run's median: about half kept. Stop at K = 5 kept, deterministically."""
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    _, out = first_run
    reference = pd.read_parquet(out.manifest)
    threshold = float(np.median(reference["l_bce"]))
    kept_seeds = reference[reference["l_bce"] < threshold]["seed"].tolist()
    k = 5
    needed = kept_seeds[k - 1] + 1  # seeds 0..needed-1 hold the first K kept pairs

    cfg = _cfg(inputs, "stream", f"pairs.bce_threshold={threshold}", f"pairs.target_kept={k}", "pairs.num_candidates=0")
    result = generate_and_select_on_ray(cfg)  # 1 + 1 actors here: another actor count than the first run
    assert result.num_exported == k and result.num_kept >= k
    stream = pd.read_parquet(result.manifest)
    assert stream["seed"].tolist() == list(range(result.num_candidates))
    # same seeds, same checkpoints, other actor count and chunking: the same scores
    common = reference.merge(stream, on="seed")
    np.testing.assert_allclose(common["l_bce_x"], common["l_bce_y"], atol=1e-5)
    exported = sorted(int(p.stem) for p in (Path(result.pairs_dir) / "trainB").iterdir())
    assert exported == kept_seeds[:k]
    # never more than one chunk beyond the need: the last chunk started before seed `needed`
    assert needed <= result.num_candidates
    parts = sorted((Path(result.stage_dir) / "manifest.parts").glob("chunk-*.parquet"))
    last_start = int(parts[-1].stem.split("-")[1])
    assert last_start < needed and result.chunks_run == len(parts) >= 2
