"""Never destroy or leak user data: folders we did not write are never replaced, manifest paths stay
inside their folder, run names and output dirs are checked at parse time, walks survive symlink
cycles, and killed writes' leftovers are cleaned at the next start. Each user error is one line.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scenimefy.config import ConfigError, load_config
from scenimefy.data.decode import list_image_files
from scenimefy.data.images import OWNED_MARKER, NotOursError, atomic_path, clean_leftovers
from scenimefy.stages.pair_manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    candidate_relpaths,
    materialize_selection,
    read_manifest,
    write_parquet_atomic,
)

SEEDS = [3, 5, 8]


@pytest.fixture
def stage_dir(tmp_path):
    """A hand-made stage-2 folder: 3 candidates of 4x4 px, all kept at threshold 10."""
    root = tmp_path / "pairs"
    rows = []
    for i, seed in enumerate(SEEDS):
        rel = candidate_relpaths(seed)
        for kind, path in rel.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB" if "labels" not in kind else "L", (4, 4), (i * 40,) * (1 if "labels" in kind else 3)).save(
                root / path
            )
        rows.append({"seed": seed, "l_bce": 1.0 + i, "n_classes": 3, "pixel_agreement": 0.5, "kept": True, **rel})
    write_parquet_atomic(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), root / MANIFEST_FILE)
    return root


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# ----------------------------------------------------------------------------------------
# Folders we did not write are never replaced


def test_select_refuses_a_non_empty_folder_it_did_not_write(stage_dir, tmp_path):
    out = tmp_path / "photos-of-my-cat"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"precious")
    with pytest.raises(NotOursError) as e:
        materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out)
    assert f"selection folder --out {out} is not empty and was not written by scenimefy" in _one_line(e)
    assert os.listdir(out) == ["cat.jpg"] and (out / "cat.jpg").read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing started


def test_select_refuses_a_file_in_place_of_the_folder(stage_dir, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(NotOursError, match="exists and is not a folder scenimefy wrote"):
        materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out)
    assert out.read_text() == "mine"


def test_select_replaces_its_own_selection_and_fills_an_empty_folder(stage_dir, tmp_path):
    out = tmp_path / "selected"
    out.mkdir()  # empty: fine
    assert materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out)["exported"] == 3
    assert (out / OWNED_MARKER).is_file() and (out / "selection.json").is_file()
    assert materialize_selection(stage_dir, threshold=2.5, min_classes=1, out_dir=out)["exported"] == 2
    assert sorted(p.name for p in (out / "trainA").iterdir()) == ["00000003.png", "00000005.png"]
    # a selection written before the marker existed is recognised by its selection.json
    (out / OWNED_MARKER).unlink()
    assert materialize_selection(stage_dir, threshold=10.0, min_classes=1, out_dir=out)["exported"] == 3


def test_the_select_command_prints_the_refusal_as_one_line(stage_dir, tmp_path, capsys):
    from scenimefy.commands.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "x.txt").write_text("x")
    code = main(["select", "--manifest", str(stage_dir), "--threshold", "10", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not written by scenimefy" in err
    assert (out / "x.txt").read_text() == "x"


def test_atomic_path_refuses_before_the_writer_runs(tmp_path):
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "a").write_text("a")
    ran = []
    with pytest.raises(NotOursError):
        with atomic_path(target) as tmp:
            ran.append(tmp)
    assert ran == [] and os.listdir(target) == ["a"]


# ----------------------------------------------------------------------------------------
# Leftovers of killed writes


def test_leftovers_of_killed_writes_are_cleaned_at_the_next_start(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    tmp_file = folder / ".state.pt.0123456789ab.tmp.pt"
    tmp_dir = folder / ".selected.abcdef012345.tmp"
    old_dir = folder / ".selected.old-00112233aabb"
    fresh = folder / ".other.pt.ffffffffffff.tmp.pt"  # a write in progress elsewhere: too young to touch
    mine = [folder / ".hidden-user-file", folder / "state.pt.0123456789ab.tmp"]  # not our names
    tmp_file.write_bytes(b"half")
    tmp_dir.mkdir()
    (tmp_dir / "trainA").mkdir()
    old_dir.mkdir()
    fresh.write_bytes(b"busy")
    for p in mine:
        p.write_text("user")
    busy_dir = folder / ".pairs.0123456789ab.tmp"  # an old folder still being filled (its trainA/ is fresh)
    (busy_dir / "trainA").mkdir(parents=True)
    hour_ago = time.time() - 7200
    for p in (tmp_file, tmp_dir / "trainA", tmp_dir, old_dir, busy_dir, *mine):
        os.utime(p, (hour_ago, hour_ago))
    removed = clean_leftovers(folder)
    assert sorted(removed) == sorted(map(str, (tmp_file, tmp_dir, old_dir)))
    assert sorted(p.name for p in folder.iterdir()) == sorted([fresh.name, busy_dir.name, *(p.name for p in mine)])


def test_the_first_write_into_a_folder_cleans_it(tmp_path):
    stale = tmp_path / ".generator.pt.0123456789ab.tmp.pt"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200,) * 2)
    with atomic_path(tmp_path / "generator.pt") as tmp:
        open(tmp, "wb").write(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.pt"]


# ----------------------------------------------------------------------------------------
# Paths from manifests stay inside their folder


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.png", "candidates/../../outside.png", "", "C:\\x.png"])
def test_manifest_paths_outside_the_folder_are_refused(stage_dir, bad):
    df = pd.read_parquet(stage_dir / MANIFEST_FILE)
    df.loc[1, "anime_path"] = bad
    write_parquet_atomic(df, stage_dir / MANIFEST_FILE)
    with pytest.raises(ValueError, match=r"row 1 anime_path: .* is not a relative path inside the manifest's folder"):
        read_manifest(stage_dir)


def test_manifest_paths_inside_the_folder_are_read(stage_dir):
    df, root = read_manifest(stage_dir)
    assert root == stage_dir and df["seed"].tolist() == SEEDS


# ----------------------------------------------------------------------------------------
# run.name and run.output_dir, at parse time


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "~me", "", "-x", "a\\b", "c:d", "tab\tname"])
def test_run_name_must_be_a_plain_name(name):
    with pytest.raises(ConfigError, match=r"run\.name=.*need a plain folder name") as e:
        load_config("tiny", [f"run.name={name}"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["my-run", "style-0.1", "my run", "sweep_3-abc12_00000"])
def test_plain_run_names_are_accepted(name):
    assert load_config("tiny", [f"run.name={name}"]).run.name == name


@pytest.mark.parametrize("uri", ["s3://bucket/runs", "gs://bucket/runs", "file:///shared/runs"])
def test_a_uri_output_dir_is_refused_before_anything_starts(uri):
    with pytest.raises(ConfigError, match=r"run\.output_dir=.*URIs are not supported for outputs.*/shared/runs"):
        load_config("tiny", [f"run.output_dir={uri}"])


def test_run_dir_of_checks_configs_built_without_validation():
    from scenimefy.distributed.cluster import run_dir_of, storage_path_of

    cfg = load_config("tiny", ["run.output_dir=/shared/runs", "run.name=ok"])
    assert str(run_dir_of(cfg)) == "/shared/runs/ok" and storage_path_of(cfg) == "/shared/runs/ray"
    cfg.run.name = "../../etc"
    with pytest.raises(ConfigError):
        run_dir_of(cfg)
    cfg.run.name, cfg.run.output_dir = "ok", "s3://b/runs"
    with pytest.raises(ConfigError):
        storage_path_of(cfg)


# ----------------------------------------------------------------------------------------
# Walking inputs: symlink cycles


def _cyclic_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("top.png", "a/one.jpg", "a/b/two.webp", "a/notes.txt"):
        (root / rel).write_bytes(b"x")
    (root / "a" / "b" / "up").symlink_to(root)  # b/up -> root: a cycle
    (root / "a" / "self").symlink_to(root / "a")  # a/self -> a
    return sorted(str(root / rel) for rel in ("top.png", "a/one.jpg", "a/b/two.webp"))


def test_list_image_files_lists_each_file_once_through_symlink_cycles(tmp_path):
    expected = _cyclic_tree(tmp_path / "photos")
    assert list_image_files(tmp_path / "photos") == expected


def test_ray_data_listing_lists_each_file_once_through_symlink_cycles(tmp_path):
    from scenimefy.distributed.data import list_images

    expected = _cyclic_tree(tmp_path / "photos")
    _fs, paths = list_images(str(tmp_path / "photos"), what="photos")
    assert paths == expected


def test_a_symlinked_folder_is_still_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    np_img = np.zeros((2, 2, 3), np.uint8)
    Image.fromarray(np_img).save(real / "x.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(real)
    assert list_image_files(tmp_path / "data") == [str(tmp_path / "data" / "linked" / "x.png")]


def test_translate_planning_walks_a_symlink_cycle_once(tmp_path):
    """The translate command lists and reports the files of an input folder once each, through cycles."""
    from scenimefy.inference.translate import _plan

    expected = _cyclic_tree(tmp_path / "photos")
    plan = _plan([str(tmp_path / "photos")], str(tmp_path / "out"))
    assert sorted(job.source for job in plan.jobs) == expected
    assert [path for path, _why in plan.skipped] == [str(tmp_path / "photos" / "a" / "notes.txt")]
