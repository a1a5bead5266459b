"""Stage 2 with a Mask2Former actor killed mid-run: the stage completes, every seed is in the
manifest exactly once, and every candidate's files are on disk.

Stage 2 runs in the test process on a local Ray cluster (2 generator + 2 Mask2Former actors,
32 candidates in one chunk, batches of 2). While a PairScorer actor is scoring a batch (its
process title is `ray::MapWorker(MapBatches(PairScorer)).submit`), and before the chunk's
manifest part exists, that actor process is killed with SIGKILL, so its batch in flight is
lost. Ray Data restarts the actor and resubmits its batches (its actor pools run with
`max_restarts=-1`, `max_task_retries=-1`); the writer's PNGs are atomic and named by seed, so
a batch written twice leaves one file per seed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pairs_fixtures import write_pair_checkpoints
from ray_head import local_actor_pids
from tiny_priors import write_tiny_mask2former

pytestmark = pytest.mark.ray

NUM_CANDIDATES = 32
DEADLINE_S = 240  # a hang guard for the watcher, not a speed check


SCORING_TITLE = "MapBatches(PairScorer)).submit"  # an actor's title while it runs a batch


def _kill_a_scorer_mid_batch(stage_dir: Path, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the first PairScorer actor seen scoring a batch (a /proc scan takes about 1 ms)."""
    deadline = time.monotonic() + DEADLINE_S
    while not stop.is_set() and time.monotonic() < deadline:
        pids = local_actor_pids(SCORING_TITLE)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed["pid"] = pids[0]
            killed["chunk_done_before_kill"] = any((stage_dir / "manifest.parts").glob("chunk-*.parquet"))
            killed["written_before_kill"] = len(list((stage_dir / "candidates" / "photo").glob("*.png")))
            return
        stop.wait(0.002)


def test_killed_mask2former_actor_the_stage_completes_with_every_seed_once(ray_local, tmp_path):
    from scenimefy.config import load_config
    from scenimefy.distributed.pairs import generate_and_select_on_ray

    g_s, g_t = write_pair_checkpoints(tmp_path)
    cfg = load_config(
        "tiny",
        [
            f"run.output_dir={tmp_path / 'runs'}",
            "run.name=actor-kill",
            "run.torch_threads=1",
            f"pairs.source_checkpoint={g_s}",
            f"pairs.target_checkpoint={g_t}",
            f"priors.mask2former={write_tiny_mask2former(tmp_path / 'mask2former')}",
            "priors.offline=true",
            "pairs.mean_latent_samples=256",
            "pairs.generator_group=2",
            "pairs.batch_size=2",
            "pairs.min_classes=1",
            "pairs.bce_threshold=10",
            f"pairs.num_candidates={NUM_CANDIDATES}",
            "pairs.generator_actors=2",
            "pairs.segmenter_actors=2",
        ],
    )
    stage_dir = tmp_path / "runs" / "actor-kill" / "pairs"
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_a_scorer_mid_batch, args=(stage_dir, killed, stop), daemon=True)
    watcher.start()
    try:
        out = generate_and_select_on_ray(cfg)
    finally:
        stop.set()
        watcher.join(timeout=30)

    assert "pid" in killed, "no Mask2Former actor was found to kill"
    assert killed["chunk_done_before_kill"] is False  # killed mid-chunk, not after it
    assert killed["written_before_kill"] < NUM_CANDIDATES
    assert not Path(f"/proc/{killed['pid']}").exists()

    # The stage completed in its one chunk; the manifest holds every seed exactly once.
    assert (out.num_candidates, out.num_kept, out.num_exported, out.chunks_run) == (NUM_CANDIDATES,) * 3 + (1,)
    manifest = pd.read_parquet(out.manifest)
    assert manifest["seed"].tolist() == list(range(NUM_CANDIDATES))
    assert np.isfinite(manifest["l_bce"]).all()
    for column in ("photo_path", "anime_path", "photo_labels_path", "anime_labels_path"):
        assert manifest[column].is_unique
        assert all((stage_dir / rel).is_file() for rel in manifest[column])
    for kind in ("photo", "anime"):
        names = sorted(p.name for p in (stage_dir / "candidates" / kind).iterdir())
        assert names == [f"{seed:08d}.png" for seed in range(NUM_CANDIDATES)]  # no leftovers of a retried batch
    exported = sorted(int(p.stem) for p in (Path(out.pairs_dir) / "trainA").iterdir())
    assert exported == list(range(NUM_CANDIDATES))
