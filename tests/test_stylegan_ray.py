"""End to end: stages 0 and 1 on a local Ray cluster with 2 CPU DDP workers, MLflow, resume."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.ray

ARCH = [
    "stylegan.size=32",
    "stylegan.latent_dim=32",
    "stylegan.n_mlp=2",
    "stylegan.channel_multiplier=1",
    "stylegan.channel_base=256",
    "stylegan.channel_max=32",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stylegan-ray")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def priors(root):
    """Tiny random CLIP and LPIPS files. The CLIP goes in an open_clip `local-dir:` folder, so
    Ray worker processes build it without tiny_priors' in-process architecture registration."""
    from tiny_priors import TINY_CLIP_CONFIG, tiny_priors_config, write_tiny_clip_weights

    cfg = tiny_priors_config(root / "priors", clip=False, mask2former=False)
    clip_dir = root / "priors" / "tiny-clip"
    weights = write_tiny_clip_weights(clip_dir / "open_clip_model.safetensors")
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    cfg.clip_model, cfg.clip_pretrained = f"local-dir:{clip_dir}", str(weights)
    return cfg


def _cfg(root, *extra):
    from scenimefy.config import load_config

    return load_config(
        "tiny",
        [
            f"run.output_dir={root / 'out'}",
            "run.name=sg-e2e",
            "run.num_workers=2",
            "run.cpus_per_worker=1",
            f"data.photos={root / 'images'}",
            f"data.anime={root / 'images'}",  # one folder for both: the second stage reuses the Parquet cache
            *ARCH,
            "pretrain.batch_size_per_worker=2",
            "pretrain.log_every_kimg=0.004",
            "pretrain.sample_every_kimg=0.008",
            "pretrain.checkpoint_every_kimg=0.008",
            "finetune.batch_size_per_worker=2",
            "finetune.n_trainable_blocks=2",
            "finetune.patch_size=16",
            "finetune.patch_count=4",
            "finetune.d_reg_every=2",
            "finetune.log_every_steps=1",
            "finetune.sample_every_steps=2",
            "finetune.checkpoint_every_steps=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def pretrained(ray_local, root):
    """Stage 0 in two runs of the same name: 2 steps, then resumed to 4 (global batch 4)."""
    from scenimefy.distributed.stylegan import pretrain_on_ray

    first = pretrain_on_ray(_cfg(root, "pretrain.total_kimg=0.008"))
    second = pretrain_on_ray(_cfg(root, "pretrain.total_kimg=0.016"))
    return first, second


def test_pretrain_two_workers_stay_identical_and_resume(pretrained):
    from mlflow.tracking import MlflowClient

    from scenimefy.stages.stylegan import load_source_checkpoint

    first, second = pretrained
    assert (first.step, first.num_images_seen) == (2, 8)
    assert (second.step, second.num_images_seen, second.resumed_from_step) == (4, 16, 2)
    for outcome in pretrained:
        assert len(outcome.rank_checksums) == 2 and outcome.rank_checksums[0] == outcome.rank_checksums[1]
    assert second.mlflow_run_id == first.mlflow_run_id  # one MLflow run per stage run name
    state = torch.load(f"{second.checkpoint}/state.pt", weights_only=True)
    assert state["progress"] == {"step": 4, "num_images_seen": 16}
    assert len(state["rng"]) == 2 and len(state["mean_path_length"]) == 2

    snapshot = load_source_checkpoint(second.snapshot)  # <run dir>/pretrain/stylegan.pt, rosinality format
    assert snapshot["args"]["iter"] == 4 and snapshot["args"]["world_size"] == 2
    assert second.snapshot.endswith("sg-e2e/pretrain/stylegan.pt")

    client = MlflowClient(first.tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.info.run_name == "sg-e2e-pretrain" and run.data.params["global_batch"] == "4"
    history = client.get_metric_history(first.mlflow_run_id, "loss_G")
    assert sorted({m.step for m in history}) == [1, 2, 3, 4]  # every 0.004 kimg = every step
    assert {m.step for m in client.get_metric_history(first.mlflow_run_id, "r1")} == {1}  # R1 at step 0 only
    samples = {a.path for a in client.list_artifacts(first.mlflow_run_id, "samples")}
    assert samples == {"samples/kimg_000000.008.png", "samples/kimg_000000.016.png"}


def test_finetune_two_workers_with_frozen_blocks_from_the_stage0_snapshot(pretrained, root, priors):
    from scenimefy.distributed.stylegan import finetune_on_ray

    def cfg(iterations):
        c = _cfg(root, f"finetune.iterations={iterations}")
        c.priors = priors
        return c

    first = finetune_on_ray(cfg(2))  # finetune.source_checkpoint empty: this run's stage-0 snapshot
    second = finetune_on_ray(cfg(3))
    assert (first.step, second.step, second.resumed_from_step) == (2, 3, 2)
    for outcome in (first, second):
        assert len(outcome.rank_checksums) == 2 and outcome.rank_checksums[0] == outcome.rank_checksums[1]
    assert second.mlflow_run_id == first.mlflow_run_id != pretrained[0].mlflow_run_id

    state = torch.load(f"{second.checkpoint}/state.pt", weights_only=True)
    G_t, G_s, G_ema = state["models"]["G"], state["models"]["G_s"], state["models"]["G_ema"]
    source = torch.load(pretrained[1].snapshot, weights_only=True)["g_ema"]
    trained = ("convs.2.", "convs.3.", "convs.4.", "convs.5.", "to_rgbs.1.", "to_rgbs.2.")
    for key, value in source.items():
        assert torch.equal(G_s[key], value)  # G_s is the stage-0 G_ema, untouched
        if not key.startswith(trained):
            assert torch.equal(G_t[key], value) and torch.equal(G_ema[key], value), key
    assert not torch.equal(G_t["convs.5.conv.weight"], source["convs.5.conv.weight"])
    assert second.snapshot.endswith("sg-e2e/finetune/stylegan.pt")
