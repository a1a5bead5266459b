"""Resumes that match: a Ray run stopped and resumed ends with the weights of an uninterrupted
run, and a resume that cannot match (another worker count) is refused with one line.

Both runs use the same seeds and the same Ray Data shards: 12 images per set on 2 workers at
batch 2 give each worker 3 batches per pass of its shard, and an epoch is 4 steps, so passes and
epochs end at different steps. The uninterrupted run goes to step 10 (epoch ends at 4 and 8);
the other stops at step 5 (its checkpoint: epoch 2, mid-pass) and resumes to step 10, crossing
the epoch boundary at 8 after the resume.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from scenimefy.demo.scenes import write_demo_dataset

    root = tmp_path_factory.mktemp("resume-data")
    return write_demo_dataset(str(root), n_photos=12, n_anime=12, n_pairs=12, n_test=0, size=32, seed=0)


def _overrides(out, demo_data, name, *extra) -> list[str]:
    return [
        f"run.output_dir={out}",
        f"run.name={name}",
        "run.num_workers=2",
        "run.cpus_per_worker=1",
        "data.load_size=32",
        "data.crop_size=32",
        f"data.photos={demo_data['photos']}",
        f"data.anime={demo_data['anime']}",
        f"data.pairs={demo_data['pairs']}",
        "translator.ngf=8",
        "translator.ndf=8",
        "translator.n_blocks=1",
        "translator.num_patches=16",
        "translator.head_dim=16",
        "translator.batch_size_per_worker=2",
        "translator.steps_per_epoch=4",
        "translator.log_every_steps=1",
        "translator.sample_every_steps=0",
        "translator.checkpoint_every_steps=3",
        *extra,
    ]


def _cfg(out, demo_data, name, *extra):
    from scenimefy.config import load_config

    return load_config("tiny", _overrides(out, demo_data, name, *extra))


def _state(outcome) -> dict:
    return torch.load(f"{outcome.checkpoint}/state.pt", weights_only=True)


@pytest.mark.ray
def test_resumed_run_equals_uninterrupted_run(ray_local, demo_data, tmp_path):
    """Generator, discriminators, heads and optimiser moments are bit-identical (torch.equal)."""
    from scenimefy.distributed.translator import train_translator_on_ray

    whole = train_translator_on_ray(_cfg(tmp_path, demo_data, "whole", "translator.max_steps=10"))
    first = train_translator_on_ray(_cfg(tmp_path, demo_data, "split", "translator.max_steps=5"))
    assert (whole.step, first.step) == (10, 5)
    assert _state(first)["progress"]["epoch"] == 2
    _refused_on_one_worker(tmp_path, demo_data)
    second = train_translator_on_ray(_cfg(tmp_path, demo_data, "split", "translator.max_steps=10"))
    assert second.step == 10 and second.resumed_from_step == 5

    a, b = _state(whole), _state(second)
    assert a["progress"] == b["progress"] and a["streams"] == b["streams"]
    differing = [
        f"{net}.{key}"
        for net in a["models"]
        for key, value in a["models"][net].items()
        if not torch.equal(value, b["models"][net][key])
    ]
    assert differing == []


@pytest.mark.ray
def test_training_shards_follow_the_data_not_the_order_tasks_finish(ray_local):
    """Ray Train splits a dataset with `streaming_split`, which hands each block to the worker with
    the fewest rows so far, in the order blocks arrive. Here block 0's task is held until the other
    five have run, so it arrives last; with `ingest_options` (preserve_order) the split is still by
    block order: blocks 0, 2, 4 to the first worker and 1, 3, 5 to the second (8 rows each, ties to
    the first). Ray's default order would give block 0 to the second worker."""
    import asyncio
    import threading

    import ray

    from scenimefy.distributed.cluster import ingest_options

    @ray.remote
    class Gate:
        def __init__(self, others: int):
            self.others, self.arrived, self.event = others, 0, asyncio.Event()

        async def arrive(self) -> None:
            self.arrived += 1
            if self.arrived == self.others:
                self.event.set()

        async def wait(self) -> None:
            await asyncio.wait_for(self.event.wait(), 60)

    gate = Gate.remote(5)

    def block_0_last(batch):
        ray.get(gate.wait.remote() if int(batch["id"][0]) < 8 else gate.arrive.remote())
        return batch

    ds = ray.data.range(48, override_num_blocks=6).map_batches(block_0_last, batch_size=None)
    ds.context.execution_options = ingest_options()
    shards = ds.streaming_split(2, equal=True)
    blocks: list[list[int]] = [[], []]

    def consume(rank: int) -> None:
        ids = [int(v) for batch in shards[rank].iter_batches(batch_size=None) for v in batch["id"]]
        blocks[rank] = sorted({i // 8 for i in ids})

    threads = [threading.Thread(target=consume, args=(rank,)) for rank in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert blocks == [[0, 2, 4], [1, 3, 5]]


def _refused_on_one_worker(out: Path, demo_data: dict) -> None:
    """Resuming the 2-worker run "split" on 1 worker is refused before Ray Train starts: each worker's
    data position and random state belong to its shard, and the global batch would halve. The CLI
    says so in one line naming run.num_workers and the fix, and exits 2 without a traceback."""
    from scenimefy.distributed.translator import train_translator_on_ray

    overrides = ["run.num_workers=1", "translator.max_steps=10"]
    with pytest.raises(ValueError, match=r"run.num_workers=1: .* trained with run.num_workers=2") as refused:
        train_translator_on_ray(_cfg(out, demo_data, "split", *overrides))
    assert "rerun with run.num_workers=2, or start a new run.name" in str(refused.value)
    assert len(list((out / "ray" / "split").glob("checkpoint_*"))) >= 2  # nothing was touched

    args = ["train", "--config", "tiny", *_overrides(out, demo_data, "split", *overrides)]
    cli = subprocess.run(
        [sys.executable, "-m", "scenimefy.commands.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 2, cli.stderr[-3000:]
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in cli.stderr, cli.stderr[-3000:]
    assert "cannot resume run 'split' with run.num_workers=1" in lines[0]


def test_the_worker_count_check_reads_every_checkpoint_of_the_run(tmp_path):
    """No checkpoint, or checkpoints of the same count: nothing to refuse. A checkpoint of another
    count is named with the count to resume with; an unreadable config.yaml is left to Ray."""
    from scenimefy.distributed.data import check_resume_workers

    run = tmp_path / "ray" / "my-run-pretrain"
    check_resume_workers(run, 1, run_name="my-run-pretrain")  # a new run
    for name, text in (
        ("checkpoint_2026-01-01_00-00-00.000001", "run:\n  num_workers: 4\n"),
        ("checkpoint_2026-01-01_00-10-00.000001", "run: [not, a, mapping\n"),
    ):
        (run / name).mkdir(parents=True)
        (run / name / "config.yaml").write_text(text)
    check_resume_workers(run, 4, run_name="my-run-pretrain")
    with pytest.raises(ValueError, match=r"'my-run-pretrain' with run.num_workers=2: .*rerun with run.num_workers=4,"):
        check_resume_workers(run, 2, run_name="my-run-pretrain")
