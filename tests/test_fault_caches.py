"""Caches that concurrent drivers share: two processes building the same cache at the same moment
both get one complete, identical cache, and nothing half-written stays behind.

- The decoded-image cache (`prepare_images`: Parquet under `data.cache_dir`, keyed by the file
  list and the size), which concurrent Tune trials prepare for the same pairs folder: two driver
  processes join one local Ray cluster and prepare the same set after a barrier.
- A trial's pairs at a searched threshold (`selected_pairs`): two processes export the same
  threshold after a barrier.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

TIMEOUT_S = 240  # a hang guard for the processes, not a speed check


def _prepare_in_a_driver(gcs_address: str, barrier, photos: str, cache: str, queue) -> None:
    """A driver process: join the cluster, wait for the other one, prepare the photos; send back
    the prepared set and whether this process decoded (only a decoding driver says what it skipped)."""
    import contextlib
    import io

    import ray

    from scenimefy.distributed.data import prepare_images

    ray.init(address=gcs_address, log_to_driver=False)
    barrier.wait(timeout=TIMEOUT_S)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        prepared = prepare_images(photos, size=32, cache_dir=cache, what="photos")
    queue.put((prepared.__dict__, "skipped 1 unreadable file(s) of 25" in said.getvalue()))
    ray.shutdown()


def _select_in_a_process(barrier, manifest: str, cache_root: str, queue) -> None:
    """A trial process: wait for the other one, export the threshold; send back the folder and the
    inodes of its trainA/ folder and its marker as this process found them (a rebuild makes new ones)."""
    from scenimefy.distributed.tune.trial import selected_pairs

    barrier.wait(timeout=TIMEOUT_S)
    folder = selected_pairs(manifest, threshold=4.5, min_classes=2, cache_root=Path(cache_root))
    queue.put((folder, _inodes(Path(folder))))


def _inodes(folder: Path) -> tuple[int, int]:
    return (folder / "trainA").stat().st_ino, (folder / "_selected.yaml").stat().st_ino


def _hidden_leftovers(folder: Path) -> list[str]:
    """Temporary or moved-aside names of `atomic_path` (a killed or raced write leaves these)."""
    from scenimefy.data.images import OWNED_MARKER

    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name.startswith(".") and not p.name.endswith(".lock") and p.name != OWNED_MARKER
    )


@pytest.mark.ray
def test_two_drivers_preparing_one_cache_get_one_complete_cache(ray_local, tmp_path):
    import pandas as pd
    import ray

    from scenimefy.demo.scenes import write_demo_dataset
    from scenimefy.distributed.data import MARKER, prepare_images

    data = write_demo_dataset(str(tmp_path / "demo"), n_photos=24, n_anime=0, n_pairs=0, n_test=0, size=32, seed=0)
    (Path(data["photos"]) / "broken.png").write_bytes(b"not a png")
    cache = tmp_path / "cache"
    gcs = ray.get_runtime_context().gcs_address
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_prepare_in_a_driver, args=(gcs, barrier, data["photos"], str(cache), queue))
        for _ in range(2)
    ]
    try:
        for p in procs:
            p.start()
        results = [queue.get(timeout=TIMEOUT_S) for _ in procs]
        for p in procs:
            p.join(timeout=TIMEOUT_S)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)

    assert sorted(decoded for _, decoded in results) == [False, True]  # one decoded, the other waited and read
    results = [prepared for prepared, _ in results]
    assert results[0] == results[1]
    assert results[0]["num_rows"] == 24 and results[0]["num_listed"] == 25
    assert results[0]["skipped"] == [str(Path(data["photos"]) / "broken.png")]
    folders = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in folders] == [Path(results[0]["path"]).name]
    assert _hidden_leftovers(cache) == []
    assert (folders[0] / MARKER).is_file()
    table = pd.read_parquet(folders[0], columns=["path"])
    assert sorted(table["path"]) == sorted(str(p) for p in Path(data["photos"]).iterdir() if p.name != "broken.png")
    # a third caller reads the finished cache: the same set, nothing rebuilt
    marker_mtime = (folders[0] / MARKER).stat().st_mtime_ns
    assert prepare_images(data["photos"], size=32, cache_dir=str(cache), what="photos").__dict__ == results[0]
    assert (folders[0] / MARKER).stat().st_mtime_ns == marker_mtime


def test_two_trials_exporting_one_threshold_get_one_complete_selection(tmp_path):
    from test_tune import _write_manifest

    from scenimefy.demo.scenes import write_demo_dataset

    data = write_demo_dataset(str(tmp_path / "demo"), n_photos=0, n_anime=0, n_pairs=6, n_test=0, size=16, seed=0)
    manifest = _write_manifest(tmp_path / "stage2", data["pairs_a"], data["pairs_b"], [3.9, 4.6, 5.1, 4.2, 4.4, 4.0])
    cache_root = tmp_path / "pairs"
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_select_in_a_process, args=(barrier, str(manifest), str(cache_root), queue))
        for _ in range(2)
    ]
    try:
        for p in procs:
            p.start()
        results = [queue.get(timeout=TIMEOUT_S) for _ in procs]
        for p in procs:
            p.join(timeout=TIMEOUT_S)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)

    folder = cache_root / "threshold=4.5-min_classes=2"
    assert [f for f, _ in results] == [str(folder), str(folder)]
    # built once: both found the same files, and they are still there
    assert results[0][1] == results[1][1] == _inodes(folder)
    kept = ["00000000.png", "00000003.png", "00000004.png", "00000005.png"]
    assert sorted(os.listdir(folder / "trainA")) == sorted(os.listdir(folder / "trainB")) == kept
    assert (folder / "_selected.yaml").is_file()
    assert _hidden_leftovers(cache_root) == [] and _hidden_leftovers(folder) == []
