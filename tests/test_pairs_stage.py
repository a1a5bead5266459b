"""Stage 2 in-process: reproducible rows, candidates and manifest, re-selection, bad input.

The L_BCE criterion itself is tested against hand-computed values in test_segmentation.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pairs_fixtures import SIZE, save_generator, score_seeds, tiny_pair, write_pair_checkpoints
from PIL import Image
from tiny_priors import write_tiny_mask2former

from scenimefy.config import PriorsConfig
from scenimefy.priors.segmentation import SemanticScorer
from scenimefy.stages import pair_manifest, pair_report
from scenimefy.stages import pairs as stage
from scenimefy.stages.pair_manifest import (
    MANIFEST_FILE,
    check_disk_space,
    export_pairs,
    manifest_frame,
    materialize_selection,
    read_manifest,
    select_from_manifest,
    write_candidates,
    write_parquet_atomic,
)
from scenimefy.stages.pair_report import inspection_grid, load_candidate_rows
from scenimefy.stages.pairs import PairGenerator, PairScorer, load_generator_pair, next_chunk_size

SEEDS = np.arange(5, 23)  # 18 seeds, across group boundaries (groups of 4)


@pytest.fixture(autouse=True)
def _one_thread():
    # Bit-level equality holds for a fixed thread count (as inside one Ray actor).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_pair_checkpoints(tmp_path_factory.mktemp("generators"))


@pytest.fixture(scope="module")
def m2f_dir(tmp_path_factory):
    return write_tiny_mask2former(tmp_path_factory.mktemp("m2f") / "mask2former")


def make_generator(checkpoints, group=4, share_noise=True):
    return PairGenerator(
        str(checkpoints[0]),
        str(checkpoints[1]),
        truncation=0.7,
        mean_latent_samples=256,
        share_noise=share_noise,
        group=group,
    )


def make_scorer(m2f_dir, threshold=5.0, min_classes=1):
    priors = {"mask2former": str(m2f_dir), "offline": True}
    return PairScorer(priors, threshold=threshold, min_classes=min_classes, precision="fp32")


def run_in_process(gen, scorer, seeds, batch_size):
    batches = list(score_seeds(gen, scorer, seeds, batch_size=batch_size))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def scored(checkpoints, m2f_dir):
    """SEEDS generated and scored in batches of 6 (the reference for several tests)."""
    torch.set_num_threads(1)
    return run_in_process(make_generator(checkpoints), make_scorer(m2f_dir), SEEDS, 6)


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory, scored):
    """Candidates written as the Ray writer task does, and a consolidated manifest."""
    root = tmp_path_factory.mktemp("stage")
    rows = [
        write_candidates({k: v[i : i + 5] for k, v in scored.items()}, root=str(root)) for i in range(0, len(SEEDS), 5)
    ]
    write_parquet_atomic(manifest_frame(rows), root / MANIFEST_FILE)
    return root


# ----------------------------------------------------------------------------------------
# Generation: a row depends on its seed only


def test_rows_do_not_depend_on_batch_size_or_order(checkpoints):
    gen = make_generator(checkpoints)
    out = {}
    for bs in (1, 5, 18):
        batches = [gen({"seed": SEEDS[i : i + bs]}) for i in range(0, len(SEEDS), bs)]
        out[bs] = {k: np.concatenate([batch[k] for batch in batches]) for k in ("photo", "anime")}
    for bs in (5, 18):
        np.testing.assert_array_equal(out[bs]["photo"], out[1]["photo"])
        np.testing.assert_array_equal(out[bs]["anime"], out[1]["anime"])
    shuffled = np.array([17, 9, 5, 22])
    again = gen({"seed": shuffled})
    np.testing.assert_array_equal(again["photo"], out[1]["photo"][shuffled - 5])
    assert out[1]["photo"].shape == (len(SEEDS), SIZE, SIZE, 3) and out[1]["photo"].dtype == np.uint8
    assert len({out[1]["photo"][i].tobytes() for i in range(len(SEEDS))}) == len(SEEDS)  # every seed differs


def test_a_new_generator_from_the_same_checkpoints_reproduces_rows(checkpoints):
    a = make_generator(checkpoints)({"seed": np.array([7, 8])})
    b = make_generator(checkpoints)({"seed": np.array([7, 8])})
    np.testing.assert_array_equal(a["photo"], b["photo"])
    np.testing.assert_array_equal(a["anime"], b["anime"])


def test_shared_noise_and_same_w_make_identical_generators_give_identical_images():
    g_s, _ = tiny_pair(seed=1)
    kw = dict(truncation=0.7, mean_latent_samples=64, group=2)
    shared = PairGenerator.from_models(g_s, g_s, share_noise=True, **kw)({"seed": np.array([0, 1])})
    np.testing.assert_array_equal(shared["photo"], shared["anime"])
    separate = PairGenerator.from_models(g_s, g_s, share_noise=False, **kw)({"seed": np.array([0, 1])})
    np.testing.assert_array_equal(separate["photo"], shared["photo"])  # G_s's draws come first
    assert not np.array_equal(separate["anime"], separate["photo"])  # the authors' independent noise


def test_truncation_uses_g_s_mean_latent_for_both_generators(checkpoints):
    gen = make_generator(checkpoints)
    g_s, _ = load_generator_pair(*checkpoints)
    expected = g_s.mean_latent(256, generator=torch.Generator().manual_seed(stage.MEAN_LATENT_SEED))
    torch.testing.assert_close(gen.w_mean, expected, rtol=0, atol=0)
    full = PairGenerator.from_models(
        *load_generator_pair(*checkpoints), truncation=1.0, mean_latent_samples=256, share_noise=True, group=4
    )
    assert not np.array_equal(full({"seed": np.array([5])})["photo"], gen({"seed": np.array([5])})["photo"])


# ----------------------------------------------------------------------------------------
# Scoring


def test_scores_do_not_depend_on_batch_size(checkpoints, m2f_dir, scored):
    other = run_in_process(make_generator(checkpoints), make_scorer(m2f_dir), SEEDS, 4)
    np.testing.assert_array_equal(other["photo"], scored["photo"])
    np.testing.assert_allclose(other["l_bce"], scored["l_bce"], atol=1e-5)
    np.testing.assert_array_equal(other["n_classes"], scored["n_classes"])


def test_scorer_adds_the_selection_columns(scored):
    n = len(SEEDS)
    assert scored["l_bce"].shape == (n,) and scored["l_bce"].dtype == np.float32
    assert scored["n_classes"].dtype == np.int64 and scored["kept"].dtype == bool
    assert scored["photo_labels"].shape == (n, SIZE, SIZE) and scored["photo_labels"].dtype == np.uint8
    assert ((scored["l_bce"] > 4.0) & (scored["l_bce"] < 5.1)).all()  # the criterion's band
    np.testing.assert_array_equal(scored["kept"], (scored["l_bce"] < 5.0) & (scored["n_classes"] >= 1))


def test_scores_are_taken_on_the_saved_pixels(m2f_dir, scored):
    scorer = SemanticScorer.from_priors(PriorsConfig(mask2former=str(m2f_dir), offline=True), "cpu", precision="fp32")
    from scenimefy.data.images import from_uint8

    out = scorer.score_pairs(from_uint8(scored["photo"][:3]), from_uint8(scored["anime"][:3]))
    np.testing.assert_allclose(out["l_bce"].numpy(), scored["l_bce"][:3], atol=1e-5)


# ----------------------------------------------------------------------------------------
# Candidates, manifest and re-selection


def test_candidates_and_manifest_are_written(stage_dir, scored):
    df, root = read_manifest(stage_dir / MANIFEST_FILE)
    assert root == stage_dir and df["seed"].tolist() == SEEDS.tolist()
    row = df.iloc[2]
    assert row["photo_path"] == f"candidates/photo/{SEEDS[2]:08d}.png"
    np.testing.assert_array_equal(np.asarray(Image.open(stage_dir / row["photo_path"])), scored["photo"][2])
    np.testing.assert_array_equal(
        np.asarray(Image.open(stage_dir / row["anime_labels_path"])), scored["anime_labels"][2]
    )
    assert not list(stage_dir.rglob(".*.tmp*"))  # no temporary files left


def test_reselection_at_another_threshold_reads_only_the_manifest(stage_dir, tmp_path, monkeypatch):
    df, _ = read_manifest(stage_dir)
    threshold = float(np.median(df["l_bce"]))
    expected = df[df["l_bce"] < threshold]["seed"].tolist()
    assert 0 < len(expected) < len(df)

    def no_segmentation(*args, **kwargs):
        raise AssertionError("re-selection must not run Mask2Former")

    monkeypatch.setattr(SemanticScorer, "forward", no_segmentation)
    out = tmp_path / "selected"
    result = materialize_selection(stage_dir / MANIFEST_FILE, threshold=threshold, min_classes=1, out_dir=out)
    assert result["kept"] == result["exported"] == len(expected)
    assert result["keep_rate"] == pytest.approx(len(expected) / len(df))
    assert sorted(p.name for p in (out / "trainA").iterdir()) == [f"{s:08d}.png" for s in expected]
    assert sorted(p.name for p in (out / "trainB").iterdir()) == [f"{s:08d}.png" for s in expected]
    first = expected[0]
    assert (out / "trainA" / f"{first:08d}.png").read_bytes() == (
        stage_dir / f"candidates/photo/{first:08d}.png"
    ).read_bytes()
    assert (out / "trainB" / f"{first:08d}.png").read_bytes() == (
        stage_dir / f"candidates/anime/{first:08d}.png"
    ).read_bytes()

    # the translator's reader pairs them by name
    from scenimefy.distributed.data import match_pairs

    _fs, matched, unmatched = match_pairs(str(out))
    assert len(matched) == len(expected) and unmatched == 0

    # a stricter threshold with a limit replaces the folder as a whole
    looser = materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out, limit=3)
    assert looser["kept"] == len(df) and looser["exported"] == 3
    assert sorted(p.name for p in (out / "trainA").iterdir()) == [f"{s:08d}.png" for s in SEEDS[:3]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_select_from_manifest_recomputes_kept_with_the_rule(stage_dir):
    df, _ = read_manifest(stage_dir)
    picked = select_from_manifest(df, threshold=5.0075, min_classes=2)
    np.testing.assert_array_equal(picked["kept"], (df["l_bce"] < 5.0075) & (df["n_classes"] >= 2))
    assert df is not picked


def test_a_threshold_that_keeps_nothing_says_so_with_the_distribution(stage_dir, tmp_path):
    out = tmp_path / "selected"
    with pytest.raises(
        ValueError, match=r"no pair has L_BCE < 3\.0.*L_BCE quantiles 0%: .*50%: .*photos with n classes \{1: \d+"
    ):
        materialize_selection(stage_dir / MANIFEST_FILE, threshold=3.0, min_classes=1, out_dir=out)
    assert not out.exists()


def test_select_command_prints_counts(stage_dir, tmp_path, capsys):
    import argparse

    from scenimefy.commands.pairs import add_pairs_commands

    parser = argparse.ArgumentParser()
    add_pairs_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "select",
            "--manifest",
            str(stage_dir),
            "--threshold",
            "10",
            "--min-classes",
            "1",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert args.func(args) == 0
    assert f"kept {len(SEEDS)} of {len(SEEDS)}" in capsys.readouterr().out
    defaults = parser.parse_args(["select", "--manifest", "m", "--out", "o"])
    assert defaults.threshold == 5.0 and defaults.min_classes == 2  # PairsConfig's defaults


def test_missing_manifest_and_wrong_file_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `scenimefy pairs` first"):
        read_manifest(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet manifest"):
        read_manifest(tmp_path / "bad.parquet")


# ----------------------------------------------------------------------------------------
# Inspection


def test_inspection_grid_shows_kept_then_rejected_rows(stage_dir):
    df, root = read_manifest(stage_dir)
    df = select_from_manifest(df, threshold=float(np.median(df["l_bce"])), min_classes=1)
    seeds = df[df["kept"]]["seed"].tolist()[:2] + df[~df["kept"]]["seed"].tolist()[:3]
    rows = load_candidate_rows(df, root, seeds)
    grid = inspection_grid(rows, n_kept=2, n_rejected=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    side = pair_report.GRID_MIN_SIDE  # 32 px images are enlarged 3x to 96 px
    assert grid.shape[0] >= 4 * side and grid.shape[1] >= 4 * side  # 4 rows, 4 columns
    assert grid.shape[0] < 5 * side  # not 5 rows
    with pytest.raises(ValueError, match="no rows"):
        inspection_grid(rows, n_kept=0, n_rejected=0)


def test_score_histogram_is_a_png(stage_dir, tmp_path):
    df, _ = read_manifest(stage_dir)
    path = pair_report.plot_score_histogram(df, threshold=5.0, path=tmp_path / "scores.png")
    assert Image.open(path).format == "PNG"


# ----------------------------------------------------------------------------------------
# Streaming until K kept


def test_next_chunk_size_follows_the_keep_rate():
    kw = dict(min_chunk=8, max_chunk=1000, align=4)
    assert next_chunk_size(target_kept=100, num_seen=0, num_kept=0, **kw) == 100  # no rate yet: never overshoot
    assert next_chunk_size(target_kept=100, num_seen=100, num_kept=50, **kw) == 108  # 50 / 0.5 * 1.05, aligned
    assert next_chunk_size(target_kept=100, num_seen=190, num_kept=99, **kw) == 8  # the minimum chunk
    assert next_chunk_size(target_kept=100, num_seen=200, num_kept=100, **kw) == 0
    assert next_chunk_size(target_kept=10**6, num_seen=10, num_kept=1, **kw) == 1000  # capped
    assert next_chunk_size(target_kept=10, num_seen=10, num_kept=0, **kw) == 116  # nothing kept yet: 10 / (1/11) * 1.05


# ----------------------------------------------------------------------------------------
# Bad input


def test_generators_of_different_architectures_are_refused(tmp_path, checkpoints):
    _, other = tiny_pair(seed=0, channel_max=16)
    mismatched = save_generator(tmp_path / "g_t_narrow.pt", other)
    with pytest.raises(ValueError, match=r"different architectures \(channel_max: 32 vs 16\).*stage-1 fine-tune"):
        load_generator_pair(checkpoints[0], mismatched)


def test_missing_or_foreign_generator_checkpoints_are_clear_errors(tmp_path, checkpoints):
    with pytest.raises(FileNotFoundError, match=r"pairs.target_checkpoint=.*missing.pt.*no such file"):
        load_generator_pair(checkpoints[0], tmp_path / "missing.pt")
    torch.save({"generator": {}}, tmp_path / "translator.pt")
    with pytest.raises(
        ValueError, match=r"pairs.source_checkpoint=.*translator.pt.*not a rosinality StyleGAN2 checkpoint"
    ):
        load_generator_pair(tmp_path / "translator.pt", checkpoints[1])
    with pytest.raises(ValueError, match="pairs.source_checkpoint is empty"):
        load_generator_pair("", checkpoints[1])
    (tmp_path / "ckptdir").mkdir()
    with pytest.raises(ValueError, match="directory without stylegan.pt"):
        load_generator_pair(tmp_path / "ckptdir", checkpoints[1])
    shutil.copy(checkpoints[0], tmp_path / "ckptdir" / "stylegan.pt")  # a stage-0 checkpoint dir works
    assert load_generator_pair(tmp_path / "ckptdir", checkpoints[1])[0].size == SIZE


def test_a_directory_that_is_not_a_mask2former_is_named(tmp_path):
    bad = tmp_path / "segformer"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    with pytest.raises(ValueError, match=r"segformer is not a Mask2Former checkpoint.*model_type='segformer'"):
        make_scorer(bad)


def test_no_disk_space_is_refused_before_writing(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 2**20))
    with pytest.raises(
        ValueError, match=r"not enough disk space for 100 candidate pairs.*need about 95 MiB, 10 MiB free"
    ):
        check_disk_space(tmp_path, 100 * 2**20 - 5 * 2**20, "100 candidate pairs")
    check_disk_space(tmp_path, 2**20, "a few pairs")


def test_disk_full_while_exporting_leaves_the_previous_selection_intact(stage_dir, tmp_path, monkeypatch):
    out = tmp_path / "selected"
    materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out, limit=2)
    before = sorted(p.name for p in (out / "trainA").iterdir())
    calls = {"n": 0}

    def full_disk(src, dst):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copyfile(src, dst)

    monkeypatch.setattr(os, "link", full_disk)
    with pytest.raises(ValueError, match="no space left on the device holding"):
        materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out)
    assert sorted(p.name for p in (out / "trainA").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary folder is gone


def test_disk_full_while_writing_candidates_is_a_clear_error(scored, tmp_path, monkeypatch):
    def full_disk(path, array, durable=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pair_manifest, "save_image_atomic", full_disk)
    with pytest.raises(ValueError, match="no space left.*a rerun resumes"):
        write_candidates({k: v[:2] for k, v in scored.items()}, root=str(tmp_path))


def test_export_pairs_is_all_or_nothing(tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(src)
    with pytest.raises(FileNotFoundError):
        export_pairs([(1, src, src), (2, src, tmp_path / "missing.png")], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert export_pairs([(1, src, src)], tmp_path / "out") == 1


# ----------------------------------------------------------------------------------------
# The stage's front door fails before Ray starts and writes nothing


def _stage_cfg(tmp_path, checkpoints, m2f, *extra):
    from scenimefy.config import load_config

    return load_config(
        "tiny",
        [
            f"run.output_dir={tmp_path / 'runs'}",
            "run.name=bad",
            f"pairs.source_checkpoint={checkpoints[0]}",
            f"pairs.target_checkpoint={checkpoints[1]}",
            f"priors.mask2former={m2f}",
            "priors.offline=true",
            *extra,
        ],
    )


def test_stage_refuses_a_mask2former_dir_that_is_not_one_before_writing(tmp_path, checkpoints):
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    bad = tmp_path / "not-m2f"
    bad.mkdir()
    with pytest.raises(ValueError, match=r"not-m2f is not a Mask2Former checkpoint: missing config.json"):
        generate_and_select_on_ray(_stage_cfg(tmp_path, checkpoints, bad))
    assert not (tmp_path / "runs").exists()


def test_stage_refuses_mismatched_generators_before_writing(tmp_path, checkpoints, m2f_dir):
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    _, narrow = tiny_pair(seed=0, channel_max=16)
    cfg = _stage_cfg(tmp_path, (checkpoints[0], save_generator(tmp_path / "narrow.pt", narrow)), m2f_dir)
    with pytest.raises(ValueError, match="different architectures"):
        generate_and_select_on_ray(cfg)
    assert not (tmp_path / "runs").exists()


def test_stage_without_checkpoints_names_the_keys_and_the_stage_snapshots(tmp_path, m2f_dir):
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    cfg = _stage_cfg(tmp_path, ("", ""), m2f_dir)
    with pytest.raises(
        ValueError,
        match=r"pairs.source_checkpoint is empty and .*pretrain/stylegan.pt does not exist.*scenimefy pretrain",
    ):
        generate_and_select_on_ray(cfg)


def test_pairs_dry_run_prints_the_plan(tmp_path, checkpoints, m2f_dir, capsys):
    import argparse

    from scenimefy.commands.pairs import add_pairs_commands

    parser = argparse.ArgumentParser()
    add_pairs_commands(parser.add_subparsers(dest="command"))
    cfg_args = [
        f"run.output_dir={tmp_path}",
        f"pairs.source_checkpoint={checkpoints[0]}",
        f"pairs.target_checkpoint={checkpoints[1]}",
    ]
    args = parser.parse_args(["pairs", "--config", "tiny", *cfg_args, "--target-kept", "300", "--dry-run"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "target_kept: 300" in out and "num_candidates: 0" in out
    assert f"# resolution: {SIZE} px" in out
    assert "# mode: stream seeds from 0 until 300 pairs are kept" in out
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_invalid_pairs_settings_are_config_errors():
    from scenimefy.config import ConfigError, load_config
    from scenimefy.distributed.pairs import validate_pairs_config

    with pytest.raises(ConfigError, match=r"pairs.truncation=1.5: need 0 < psi <= 1"):
        validate_pairs_config(load_config(None, ["pairs.truncation=1.5"]))
    with pytest.raises(ConfigError, match=r"pairs.target_kept=0: need >= 1 when pairs.num_candidates=0"):
        validate_pairs_config(load_config(None, ["pairs.target_kept=0"]))


def test_ray_data_user_errors_become_one_line_errors():
    from scenimefy.distributed.pairs import _user_error

    remote = RuntimeError(
        'ray::MapBatches(write_candidates)() (pid=1)\n  File "x.py", line 3, in f\n'
        "OSError: [Errno 28] No space left on device\n\nThe above exception was the direct cause of:\n"
        "ValueError: no space left on the device holding /out (3 MiB free): free some space\n"
    )
    err = _user_error(remote)
    assert type(err) is ValueError and str(err).startswith("no space left on the device holding /out")
    bug = RuntimeError("ray::X()\nKeyError: 'photo'")
    assert _user_error(bug) is bug


def test_the_stage_module_and_the_benchmark_import_neither_ray_nor_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, runpy; import scenimefy.stages.pairs, scenimefy.stages.pair_manifest; "
        "import scenimefy.stages.pair_report; "
        "sys.argv = ['x']; m = runpy.run_path('jobs/benchmark_pairs.py', run_name='not_main'); "
        "print(sorted(k for k in ('ray', 'mlflow', 'pandas') if k in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
