"""Faults in the kept checkpoints: a damaged, truncated or half-written latest checkpoint is skipped
with a warning naming it and the one used, and the run resumes exactly from the previous one."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from stage_recorder import TINY_TRANSLATOR, ArraySource, Recorder, random_translator_sources

from scenimefy.config import load_config
from scenimefy.stages import checkpoint as ckpt
from scenimefy.stages.context import CheckpointRef, WorkerContext
from scenimefy.stages.stylegan import train_pretrain
from scenimefy.stages.translator import train_translator

TRANSLATOR = TINY_TRANSLATOR + ["translator.log_every_steps=1"]
PRETRAIN = [
    "stylegan.size=32",
    "stylegan.latent_dim=32",
    "stylegan.n_mlp=2",
    "stylegan.channel_multiplier=1",
    "stylegan.channel_base=256",
    "stylegan.channel_max=32",
    "pretrain.batch_size_per_worker=2",
    "pretrain.d_reg_every=2",
    "pretrain.g_reg_every=2",
    "pretrain.log_every_kimg=0.002",
    "pretrain.sample_every_kimg=0",
    "pretrain.checkpoint_every_kimg=0.002",
    "run.torch_threads=1",
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kept(dirs) -> WorkerContext:
    """A context whose kept checkpoints are `dirs`, oldest first (offered newest first)."""
    refs = [CheckpointRef(str(d), lambda d=d: str(d)) for d in reversed(dirs)]
    return WorkerContext(kept_checkpoints=lambda: refs)


def _truncate(d):
    p = Path(d) / ckpt.STATE_FILE
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return "has"  # "state.pt has N bytes, M were written (truncated?)"


def _flip_a_byte(d):
    p = Path(d) / ckpt.STATE_FILE
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    return "SHA-256"


def _unsealed(d):
    (Path(d) / ckpt.MANIFEST_FILE).unlink()  # the writer was killed before the manifest
    return "the write did not finish"


def _snapshot_missing(d):
    (Path(d) / ckpt.TRANSLATOR_SNAPSHOT_FILE).unlink()
    return f"{ckpt.TRANSLATOR_SNAPSHOT_FILE} is missing"


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A translator run's checkpoints after steps 1, 2 and 3 (sealed by the loop)."""
    rec = Recorder()
    train_translator(
        load_config(None, [*TRANSLATOR, "translator.max_steps=3"]), random_translator_sources(), 2, rec.context()
    )
    assert len(rec.checkpoints) == 3
    return rec.checkpoints


def _copies(dirs, root: Path) -> list[Path]:
    out = []
    for i, d in enumerate(dirs):
        out.append(root / f"checkpoint_{i}")
        shutil.copytree(d, out[-1])
    return out


def test_a_sealed_checkpoint_lists_every_file_and_verifies(three_checkpoints):
    d = Path(three_checkpoints[-1])
    ckpt.verify(d)
    listed = set(__import__("json").loads((d / ckpt.MANIFEST_FILE).read_text())["files"])
    assert listed == {ckpt.STATE_FILE, ckpt.TRANSLATOR_SNAPSHOT_FILE, ckpt.CONFIG_FILE}


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _unsealed, _snapshot_missing])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, three_checkpoints, tmp_path, capsys):
    dirs = _copies(three_checkpoints, tmp_path)
    reason = damage(dirs[-1])
    with pytest.raises(ckpt.CheckpointUnreadable, match=reason.replace("(", r"\(")):
        ckpt.verify(dirs[-1])

    directory, state = ckpt.load_resume_state(_kept(dirs), "translator")
    assert directory == str(dirs[1]) and state["progress"]["step"] == 2
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1, warning  # one line naming the skipped checkpoint, why, and the one used
    assert str(dirs[2]) in warning[0] and reason in warning[0]
    assert f"resuming from {dirs[1]} (step 2)" in warning[0]


def test_when_no_kept_checkpoint_can_be_used_the_error_names_each(three_checkpoints, tmp_path):
    dirs = _copies(three_checkpoints[1:], tmp_path)
    _truncate(dirs[1])
    _unsealed(dirs[0])
    with pytest.raises(ValueError) as failed:
        ckpt.load_resume_state(_kept(dirs), "translator")
    message = str(failed.value)
    assert "\n" not in message and "none of the 2 kept checkpoint(s)" in message and "new run.name" in message
    assert f"{dirs[1]} (state.pt has" in message and f"{dirs[0]} (complete.json is missing" in message


def test_a_run_with_no_checkpoint_starts_fresh():
    assert ckpt.load_resume_state(_kept([]), "translator") is None
    assert ckpt.load_resume_state(WorkerContext(), "translator") is None


def test_resuming_past_a_truncated_checkpoint_reproduces_the_uninterrupted_run(three_checkpoints, tmp_path, capsys):
    full = Recorder()
    train_translator(load_config(None, TRANSLATOR), random_translator_sources(), 2, full.context())
    dirs = _copies(three_checkpoints, tmp_path)
    _truncate(dirs[-1])

    resumed = Recorder()
    ctx = _kept(dirs)
    ctx.report = resumed.report
    out = train_translator(load_config(None, TRANSLATOR), random_translator_sources(), 2, ctx)
    assert out["resumed_from_step"] == 2 and out["step"] == 4
    assert "skipped checkpoint" in capsys.readouterr().err
    a = torch.load(f"{full.checkpoints[-1]}/state.pt", weights_only=True)
    b = torch.load(f"{resumed.checkpoints[-1]}/state.pt", weights_only=True)
    for net in a["models"]:
        for key, value in a["models"][net].items():
            assert torch.equal(value, b["models"][net][key]), f"{net}.{key} differs"


def test_pretraining_falls_back_the_same_way(tmp_path, capsys):
    first = Recorder()
    train_pretrain(load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.006"]), _photos(), first.context())
    assert len(first.checkpoints) == 3
    dirs = _copies(first.checkpoints, tmp_path)
    _unsealed(dirs[-1])
    resumed = Recorder()
    ctx = _kept(dirs)
    ctx.report = resumed.report
    out = train_pretrain(load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.008"]), _photos(), ctx)
    assert out["resumed_from_step"] == 2 and out["step"] == 4
    err = capsys.readouterr().err
    assert str(dirs[2]) in err and f"resuming from {dirs[1]} (step 2)" in err


def _photos():
    rng = np.random.default_rng(0)
    return {
        "photos": ArraySource({"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)}, batch_size=2, seed=1)
    }


# ----------------------------------------------------------------------------------------
# Through Ray Train: the kept checkpoints come from the controller, both workers take the same one


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from scenimefy.demo.scenes import write_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return write_demo_dataset(str(root), n_photos=8, n_anime=8, n_pairs=8, n_test=2, size=32, seed=0)


def ray_cfg(tmp_path, demo_data, name, *extra):
    return load_config(
        "tiny",
        [
            f"run.output_dir={tmp_path}",
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
            "translator.num_patches=8",
            "translator.head_dim=8",
            "translator.batch_size_per_worker=2",
            "translator.steps_per_epoch=3",
            "translator.log_every_steps=1",
            "translator.checkpoint_every_steps=2",
            "translator.keep_checkpoints=3",
            "evaluate.every_epochs=0",
            *extra,
        ],
    )


def exceptions_to_file(path: str):
    """A Train callback appending a line per worker exception the controller sees (defined in a
    function so that it pickles by value)."""
    from ray.train import UserCallback

    class ExceptionsToFile(UserCallback):
        def after_exception(self, run_context, worker_exceptions) -> None:
            with open(path, "a") as f:
                f.write(f"{sorted(worker_exceptions)}\n")

    return ExceptionsToFile()


@pytest.mark.ray
def test_on_ray_a_truncated_checkpoint_is_skipped_and_a_nan_fails_once_keeping_the_last_good(
    ray_local, demo_data, tmp_path
):
    """One run name, three fits (so one local Ray serves both faults): a truncated latest
    checkpoint is skipped by both workers; then a non-finite loss ends the resumed run in one
    line, without a Ray Train restart, keeping the last good checkpoint."""
    from mlflow.tracking import MlflowClient

    from scenimefy.distributed.translator import train_translator_on_ray

    first = train_translator_on_ray(ray_cfg(tmp_path, demo_data, "faults", "translator.max_steps=4"))
    assert first.step == 4  # checkpoints after steps 2, 3 (epoch end) and 4; the last two are kept
    kept = sorted(p for p in (tmp_path / "ray" / "faults").glob("checkpoint_*") if p.is_dir())
    assert str(kept[-1]) == first.checkpoint
    # The newest intact one after the truncation: step 3, unless Ray Train restarted a worker of the
    # first run (a slow machine) and its retry wrote step 4 a second time.
    intact_step = int(ckpt.load_state(str(kept[-2]))["progress"]["step"])
    assert intact_step in (3, 4)
    _truncate(first.checkpoint)

    second = train_translator_on_ray(ray_cfg(tmp_path, demo_data, "faults", "translator.max_steps=6"))
    assert second.resumed_from_step == intact_step and second.step == 6
    assert len(second.rank_checksums) == 2 and second.rank_checksums[0] == second.rank_checksums[1]
    ckpt.verify(second.checkpoint)

    # lambda_SRC = 1e300 overflows fp32: loss_G is inf from the first step after the resume (a
    # results setting, not the architecture, so the run resumes and fails at step 7)
    exceptions = tmp_path / "exceptions.txt"
    cfg = ray_cfg(tmp_path, demo_data, "faults", "translator.lambda_src=1e300", "run.max_failures=2")
    with pytest.raises(ValueError) as failed:
        train_translator_on_ray(cfg, callbacks=[exceptions_to_file(str(exceptions))])
    message = str(failed.value)
    assert "\n" not in message and "diverged" not in message
    assert message.startswith("translator: non-finite loss at step 7 (epoch 3): loss_G=inf")
    assert f"the last good checkpoint is step 6 at {second.checkpoint}" in message
    assert not exceptions.exists()  # no worker raised: Ray Train had nothing to restart
    newest = max(p for p in (tmp_path / "ray" / "faults").glob("checkpoint_*") if p.is_dir())
    assert str(newest) == second.checkpoint  # nothing was written after the last good one
    assert MlflowClient(second.tracking_uri).get_run(second.mlflow_run_id).info.status == "FAILED"
