"""Stage tier: StyleGAN2 pretraining (stage 0) and fine-tuning (stage 1) steps and loops in-process."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from stage_recorder import ArraySource, MemoryTracker, Recorder
from tiny_priors import tiny_priors_config

from scenimefy.config import load_config
from scenimefy.models.rosinality import load_rosinality_checkpoint, save_rosinality_checkpoint
from scenimefy.models.stylegan2 import freeze_for_finetuning
from scenimefy.priors.loading import PriorNotAvailable
from scenimefy.stages.checkpoint import STYLEGAN_SNAPSHOT_FILE
from scenimefy.stages.stylegan import (
    StepNoise,
    StyleGANNets,
    build_discriminator,
    build_generator,
    build_optimizers,
    finetune_step,
    load_source_checkpoint,
    pretrain_step,
    source_networks,
    train_finetune,
    train_pretrain,
)

ARCH = [
    "stylegan.size=32",
    "stylegan.latent_dim=32",
    "stylegan.n_mlp=2",
    "stylegan.channel_multiplier=1",
    "stylegan.channel_base=256",
    "stylegan.channel_max=32",
]
PRETRAIN = [
    *ARCH,
    "pretrain.batch_size_per_worker=2",
    "pretrain.d_reg_every=2",
    "pretrain.g_reg_every=2",
    "pretrain.log_every_kimg=0.002",
    "pretrain.sample_every_kimg=0.004",
    "pretrain.checkpoint_every_kimg=1",
    "run.torch_threads=1",
]
FINETUNE = [
    *ARCH,
    "finetune.batch_size_per_worker=2",
    "finetune.n_trainable_blocks=2",
    "finetune.patch_size=16",
    "finetune.patch_count=4",
    "finetune.d_reg_every=2",
    "finetune.log_every_steps=1",
    "finetune.sample_every_steps=2",
    "finetune.checkpoint_every_steps=100",
    "run.torch_threads=1",
]


@pytest.fixture(autouse=True)
def one_thread():
    """The loops run with run.torch_threads=1; the bare steps too (test machines share few cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    return tiny_priors_config(tmp_path_factory.mktemp("priors"), mask2former=False)


@pytest.fixture(scope="module")
def clip_lpips(priors):
    from scenimefy.priors.loading import load_clip, load_lpips

    return load_clip(priors), load_lpips(priors)


def _sources(name, seed=0, n=8, size=32):
    rng = np.random.default_rng(seed)
    return {
        name: ArraySource({"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)}, batch_size=2, seed=1)
    }


def _state(path):
    return torch.load(f"{path}/state.pt", weights_only=True)


def _assert_same_models(a, b):
    for net in a["models"]:
        for key in a["models"][net]:
            assert torch.equal(a["models"][net][key], b["models"][net][key]), f"{net}.{key} differs after resume"


# ----------------------------------------------------------------------------------------
# Stage 0: the step


def _pretrain_nets(cfg):
    torch.manual_seed(0)
    G, D = build_generator(cfg.stylegan), build_discriminator(cfg.stylegan)
    G_ema = build_generator(cfg.stylegan).requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    p = cfg.pretrain
    g_optim, d_optim = build_optimizers(
        G, D, lr=p.lr, beta1=p.beta1, beta2=p.beta2, g_reg_every=p.g_reg_every, d_reg_every=p.d_reg_every
    )
    return StyleGANNets(G=G, D=D, G_ema=G_ema, g_optim=g_optim, d_optim=d_optim)


def _real(seed=0, n=2):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pretrain_step_regularises_at_its_intervals_and_updates_the_path_length_mean():
    cfg = load_config(None, [*PRETRAIN, "pretrain.d_reg_every=2", "pretrain.g_reg_every=3"])
    nets = _pretrain_nets(cfg)
    seen = []
    means = [0.0]
    for step in range(6):
        m = pretrain_step(
            nets, _real(step), p=cfg.pretrain, step=step, generator=torch.Generator().manual_seed(step), ema_decay=0.9
        )
        seen.append(("r1" in m, "path_penalty" in m))
        assert {"loss_D", "loss_G", "real_score", "fake_score"} <= set(m)
        if "path_penalty" in m:
            assert {"path_length", "mean_path_length"} <= set(m)
            # a <- a + decay (mean_b l_b - a)
            assert m["mean_path_length"] == pytest.approx(means[-1] + 0.01 * (m["path_length"] - means[-1]), rel=1e-5)
            means.append(m["mean_path_length"])
            assert float(nets.mean_path_length) == pytest.approx(m["mean_path_length"])
    assert seen == [(True, True), (False, False), (True, False), (False, True), (True, False), (False, False)]
    assert len(means) == 3 and means[1] > 0 and means[2] != means[1]


def test_pretrain_step_updates_both_networks_and_the_ema():
    cfg = load_config(None, PRETRAIN)
    nets = _pretrain_nets(cfg)
    g0 = {k: v.clone() for k, v in nets.G.state_dict().items()}
    d0 = [p.clone() for p in nets.D.parameters()]
    pretrain_step(nets, _real(), p=cfg.pretrain, step=1, generator=torch.Generator().manual_seed(0), ema_decay=0.9)
    assert not all(torch.equal(a, b) for a, b in zip(d0, nets.D.parameters()))
    for name, p in nets.G.named_parameters():
        ema = dict(nets.G_ema.named_parameters())[name]
        torch.testing.assert_close(ema, 0.9 * g0[name] + 0.1 * p.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets.G.state_dict()["convs.0.conv.weight"], g0["convs.0.conv.weight"])


def test_lazy_regularisation_corrects_both_optimisers():
    cfg = load_config(None, [*ARCH, "pretrain.d_reg_every=16", "pretrain.g_reg_every=4"])
    nets = _pretrain_nets(cfg)
    g, d = nets.g_optim.param_groups[0], nets.d_optim.param_groups[0]
    assert g["lr"] == pytest.approx(0.0016) and g["betas"] == pytest.approx((0.0, 0.99**0.8))
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))


# ----------------------------------------------------------------------------------------
# Stage 0: the loop


def test_pretrain_loop_logs_samples_and_checkpoints_in_rosinality_format():
    cfg = load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.008"])
    rec, tracker = Recorder(), MemoryTracker()
    out = train_pretrain(cfg, _sources("photos"), rec.context(tracker))
    assert out["step"] == 4 and out["num_images_seen"] == 8
    assert [s for s, _ in tracker.metrics] == [1, 2, 3, 4]  # every 0.002 kimg = every step at batch 2
    assert "r1" in tracker.metrics[0][1] and "r1" not in tracker.metrics[1][1]
    assert "sec_per_kimg" in tracker.metrics[-1][1] and tracker.metrics[-1][1]["kimg"] == pytest.approx(0.008)
    assert tracker.images == ["samples/kimg_000000.004.png", "samples/kimg_000000.008.png"]
    assert len(rec.checkpoints) == 1  # at the end
    state = _state(rec.checkpoints[-1])
    assert state["progress"] == {"step": 4, "num_images_seen": 8}
    assert set(state["models"]) == {"G", "D", "G_ema"} and set(state["optimizers"]) == {"G", "D"}
    assert state["mean_path_length"][0] > 0
    assert state["config"]["stylegan"]["size"] == 32
    snap = load_rosinality_checkpoint(f"{rec.checkpoints[-1]}/{STYLEGAN_SNAPSHOT_FILE}")
    assert set(snap) == {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
    assert snap["args"]["iter"] == 4 and snap["args"]["size"] == 32
    for key, value in state["models"]["G_ema"].items():
        assert torch.equal(snap["g_ema"][key], value)
    assert not any(k.startswith("module.") for k in snap["g"])


def test_pretrain_k_steps_resume_and_the_rest_equal_an_uninterrupted_run():
    full = Recorder()
    train_pretrain(load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.008"]), _sources("photos"), full.context())

    first = Recorder()
    train_pretrain(load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.004"]), _sources("photos"), first.context())
    assert _state(first.checkpoints[-1])["progress"]["step"] == 2

    second = Recorder(resume_from=first.checkpoints[-1])
    out = train_pretrain(
        load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.008"]), _sources("photos"), second.context()
    )
    assert out["step"] == 4 and out["resumed_from_step"] == 2
    a, b = _state(full.checkpoints[-1]), _state(second.checkpoints[-1])
    _assert_same_models(a, b)
    assert a["mean_path_length"] == b["mean_path_length"]
    assert a["progress"] == b["progress"]
    assert a["optimizers"]["G"]["state"][0]["exp_avg_sq"].equal(b["optimizers"]["G"]["state"][0]["exp_avg_sq"])


def test_resume_with_another_architecture_is_an_error():
    first = Recorder()
    train_pretrain(load_config(None, [*PRETRAIN, "pretrain.total_kimg=0.002"]), _sources("photos"), first.context())
    again = Recorder(resume_from=first.checkpoints[-1])
    with pytest.raises(ValueError, match="stylegan.channel_max: checkpoint 32 vs config 16"):
        train_pretrain(load_config(None, [*PRETRAIN, "stylegan.channel_max=16"]), _sources("photos"), again.context())


def test_pretrain_batch_must_suit_the_minibatch_stddev_group():
    cfg = load_config(None, [*PRETRAIN, "pretrain.batch_size_per_worker=6"])
    with pytest.raises(ValueError, match="pretrain.batch_size_per_worker=6.*multiple of 4"):
        train_pretrain(cfg, _sources("photos"), Recorder().context())


# ----------------------------------------------------------------------------------------
# Stage 1


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A tiny 'stage-0' generator in rosinality format, with non-zero noise strengths."""
    cfg = load_config(None, ARCH)
    torch.manual_seed(1)
    g, d = build_generator(cfg.stylegan), build_discriminator(cfg.stylegan)
    for conv in g.convs:
        conv.noise.weight.data.fill_(0.3)
    path = tmp_path_factory.mktemp("source") / "lhq-tiny.pt"
    save_rosinality_checkpoint(path, g, d, g, None, None, {"size": 32})
    return path


def _finetune_nets(cfg, source_file):
    g_ema, d = source_networks(load_source_checkpoint(source_file), cfg.stylegan)
    G_s = build_generator(cfg.stylegan).requires_grad_(False)
    G_t, G_ema = build_generator(cfg.stylegan), build_generator(cfg.stylegan).requires_grad_(False)
    for m in (G_s, G_t, G_ema):
        m.load_state_dict(g_ema.state_dict())
    trainable = freeze_for_finetuning(G_t, cfg.finetune.n_trainable_blocks)
    f = cfg.finetune
    g_optim, d_optim = build_optimizers(
        G_t, d, lr=f.lr, beta1=f.beta1, beta2=f.beta2, g_reg_every=f.g_reg_every, d_reg_every=f.d_reg_every
    )
    return StyleGANNets(G=G_t, D=d, G_ema=G_ema, g_optim=g_optim, d_optim=d_optim, G_s=G_s, trainable=trainable)


def test_finetune_step_trains_only_the_last_blocks_and_leaves_g_s_untouched(source_file, clip_lpips):
    cfg = load_config(None, FINETUNE)
    nets = _finetune_nets(cfg, source_file)
    source = {k: v.clone() for k, v in nets.G_s.state_dict().items()}
    before = {k: v.clone() for k, v in nets.G.state_dict().items()}
    d_before = [p.clone() for p in nets.D.parameters()]
    assert set(nets.trainable) == {
        n
        for n, _ in nets.G.named_parameters()
        if n.startswith(("convs.2.", "convs.3.", "convs.4.", "convs.5.", "to_rgbs.1.", "to_rgbs.2."))
    }
    metrics = [
        finetune_step(
            nets,
            _real(step),
            f=cfg.finetune,
            step=step,
            generator=torch.Generator().manual_seed(step),
            ema_decay=0.5,
            clip=clip_lpips[0],
            lpips=clip_lpips[1],
        )  # fmt: skip
        for step in range(2)
    ]
    assert {"loss_D", "loss_G", "loss_G_adv", "loss_clip", "loss_lpips", "loss_patch", "r1"} <= set(metrics[0])
    assert "r1" not in metrics[1] and "path_penalty" not in metrics[0]  # R1 every 2 steps; no path length
    params = dict(nets.G.named_parameters())
    for name, p in params.items():
        if name in nets.trainable:
            continue
        assert torch.equal(p, before[name]), f"frozen {name} moved"
    moved = [n for n in nets.trainable if not torch.equal(params[n], before[n])]
    assert {"convs.5.conv.weight", "to_rgbs.2.conv.weight", "convs.2.conv.modulation.weight"} <= set(moved)
    for key, value in nets.G_s.state_dict().items():
        assert torch.equal(value, source[key]), f"G_s.{key} changed"
    ema = dict(nets.G_ema.named_parameters())
    for name, p in nets.G_s.named_parameters():
        if name not in nets.trainable:
            assert torch.equal(ema[name], p), f"EMA of frozen {name} differs from G_s"
    assert all(not torch.equal(ema[name], before[name]) for name in moved)  # the EMA follows G_t
    assert not all(torch.equal(a, b) for a, b in zip(d_before, nets.D.parameters()))


def test_finetune_first_step_sees_identical_pairs_and_weights_the_loss(source_file, clip_lpips):
    """G_t = G_s at the start: shared z, inject index and noise make x^p == y^p exactly."""
    cfg = load_config(None, [*FINETUNE, "finetune.mixing_prob=1.0"])
    nets = _finetune_nets(cfg, source_file)
    m = finetune_step(
        nets, _real(), f=cfg.finetune, step=1, generator=torch.Generator().manual_seed(0),
        ema_decay=0.5, clip=clip_lpips[0], lpips=clip_lpips[1],
    )  # fmt: skip
    assert "r1" not in m  # step 1 with d_reg_every 2
    assert m["loss_clip"] == pytest.approx(0.0, abs=1e-6)
    assert m["loss_lpips"] == pytest.approx(0.0, abs=1e-6)
    f = cfg.finetune
    expected = (
        m["loss_G_adv"]
        + f.lambda_global * (m["loss_clip"] + f.lambda_lpips * m["loss_lpips"])
        + f.lambda_patch * m["loss_patch"]
    )
    assert m["loss_G"] == pytest.approx(expected, rel=1e-5)


def test_finetune_loop_samples_checkpoints_and_resumes_exactly(source_file, priors):
    def cfg(iterations):
        c = load_config(None, [*FINETUNE, f"finetune.iterations={iterations}"])
        c.priors = priors
        return c

    source = load_source_checkpoint(source_file)
    full, tracker = Recorder(), MemoryTracker()
    out = train_finetune(cfg(3), _sources("anime"), full.context(tracker), source_state=source)
    assert out["step"] == 3
    assert tracker.images == ["samples/step_0000002.png"]
    assert [s for s, _ in tracker.metrics] == [1, 2, 3]
    state = _state(full.checkpoints[-1])
    assert set(state["models"]) == {"G", "D", "G_ema", "G_s"}
    snap = load_rosinality_checkpoint(f"{full.checkpoints[-1]}/{STYLEGAN_SNAPSHOT_FILE}")
    assert snap["args"]["scenimefy_stage"] == "finetune" and snap["args"]["n_trainable_blocks"] == 2

    first = Recorder()
    train_finetune(cfg(1), _sources("anime"), first.context(), source_state=source)
    second = Recorder(resume_from=first.checkpoints[-1])
    out = train_finetune(cfg(3), _sources("anime"), second.context(), source_state=None)
    assert out["resumed_from_step"] == 1 and out["step"] == 3
    _assert_same_models(state, _state(second.checkpoints[-1]))


# ----------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "arch, message",
    [
        (["stylegan.size=64"], "checkpoint is 32 px .* config asks for 64 px"),
        (["stylegan.channel_multiplier=2"], "channel_multiplier 1 .* config asks for 32 px / 2"),
        (["stylegan.latent_dim=16"], "latent 32 / n_mlp 2, config asks for stylegan.latent_dim=16"),
    ],
)
def test_a_source_of_another_architecture_says_which(source_file, arch, message):
    cfg = load_config(None, [*ARCH, *arch])
    with pytest.raises(ValueError, match=message):
        source_networks(load_source_checkpoint(source_file), cfg.stylegan)


def test_a_missing_prior_offline_names_the_file(source_file, tmp_path):
    from scenimefy.config import PriorsConfig

    cfg = load_config(None, [*FINETUNE, "finetune.iterations=1"])
    cfg.priors = PriorsConfig(cache_dir=str(tmp_path), offline=True)
    with pytest.raises(
        PriorNotAvailable, match="CLIP weights ViT-B-32/openai not available \\(offline\\).*weights download"
    ):
        train_finetune(cfg, _sources("anime"), Recorder().context(), source_state=load_source_checkpoint(source_file))


def test_a_folder_with_too_few_images_for_the_batch_is_an_error(tmp_path):
    from PIL import Image

    from scenimefy.distributed.stylegan import preflight

    for i in range(3):
        Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = load_config(
        None, [*PRETRAIN, f"data.photos={tmp_path}", "pretrain.batch_size_per_worker=2", "run.num_workers=2"]
    )
    with pytest.raises(
        ValueError,
        match=(
            "photos: 3 usable image\\(s\\) give each of 2 worker\\(s\\) 1, "
            "fewer than pretrain.batch_size_per_worker=2 \\(global batch 4\\)"
        ),
    ):
        preflight(cfg, "pretrain")
    cfg = load_config(None, [*PRETRAIN, f"data.photos={tmp_path}", "run.num_workers=1"])
    assert preflight(cfg, "pretrain")["global batch"] == 2


def test_finetune_without_a_source_says_how_to_get_one(tmp_path):
    from scenimefy.distributed.stylegan import finetune_source_of

    cfg = load_config(None, [*FINETUNE, f"run.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="finetune.source_checkpoint is empty .* run `scenimefy pretrain` first"):
        finetune_source_of(cfg)


def test_stages_and_losses_import_neither_ray_nor_mlflow():
    code = (
        "import sys, scenimefy.stages.stylegan, scenimefy.losses.clip_losses; "
        "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------
# Front door: one-line errors before any Ray worker starts


def _image_folder(path, n):
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 40), (i * 30, 0, 0)).save(path / f"{i}.png")
    return path


def test_cli_pretrain_dry_run_prints_the_global_batch_and_run_dir(tmp_path, capsys):
    from scenimefy.commands.cli import main

    photos = _image_folder(tmp_path / "photos", 4)
    code = main(["pretrain", "--config", "tiny", "--dry-run", f"data.photos={photos}", f"run.output_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "# global batch: 4" in out and "# world size: 2" in out and "# stage run: scenimefy-tiny-pretrain" in out
    assert "total_kimg: 0.4" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["stylegan.size=64"], "checkpoint is 32 px with channel_multiplier 1"),
        (["priors.offline=true"], "CLIP weights ViT-B-32/openai not available (offline)"),
    ],
)
def test_cli_finetune_errors_are_one_line_and_come_before_ray(tmp_path, capsys, source_file, extra, message):
    from scenimefy.commands.cli import main

    anime = _image_folder(tmp_path / "anime", 4)
    args = ["finetune", "--config", "tiny", *ARCH, f"data.anime={anime}", f"run.output_dir={tmp_path}"]
    args += [f"finetune.source_checkpoint={source_file}", f"priors.cache_dir={tmp_path / 'cache'}", *extra]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "ray").exists()


# ----------------------------------------------------------------------------------------
# The noise seam of pretrain_step / finetune_step


class RecordedNoise(StepNoise):
    """The default draws, each also kept in `draws` (kind, value) in the order the step asked."""

    def __init__(self, generator, device):
        super().__init__(generator, device)
        self.draws = []

    def _keep(self, kind, value):
        self.draws.append((kind, value))
        return value

    def styles(self, batch, latent_dim, *, mixing_prob, n_latent):
        return self._keep("styles", super().styles(batch, latent_dim, mixing_prob=mixing_prob, n_latent=n_latent))

    def noise(self, G, batch):
        return self._keep("noise", super().noise(G, batch))

    def probe(self, shape):
        return self._keep("probe", super().probe(shape))

    def patch_corners(self, size, patch_size, count):
        return self._keep("corners", super().patch_corners(size, patch_size, count))


class InjectedNoise(StepNoise):
    """Returns given values in order, checking each is the kind the step asks for; draws nothing."""

    def __init__(self, draws):
        self.draws = list(draws)

    def _next(self, kind):
        got, value = self.draws.pop(0)
        assert got == kind, f"the step asked for {kind}, the injected sequence has {got} next"
        return value

    def styles(self, batch, latent_dim, *, mixing_prob, n_latent):
        return self._next("styles")

    def noise(self, G, batch):
        return self._next("noise")

    def probe(self, shape):
        return self._next("probe")

    def patch_corners(self, size, patch_size, count):
        return self._next("corners")


def _same_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_pretrain_step_with_injected_draws_equal_to_the_default_reproduces_it_exactly():
    cfg = load_config(None, [*PRETRAIN, "pretrain.mixing_prob=0.9"])
    kw = dict(p=cfg.pretrain, step=0, ema_decay=0.9)  # step 0: R1 and path length both run
    default_nets, recorded_nets, injected_nets = _pretrain_nets(cfg), _pretrain_nets(cfg), _pretrain_nets(cfg)
    default = pretrain_step(default_nets, _real(), generator=torch.Generator().manual_seed(3), **kw)
    recorder = RecordedNoise(torch.Generator().manual_seed(3), torch.device("cpu"))
    assert pretrain_step(recorded_nets, _real(), generator=torch.Generator(), noise=recorder, **kw) == default
    # D step, G step, path-length step: z and noise for each, then the probe
    assert [kind for kind, _ in recorder.draws] == ["styles", "noise"] * 3 + ["probe"]

    injected = InjectedNoise(recorder.draws)
    assert pretrain_step(injected_nets, _real(), generator=torch.Generator(), noise=injected, **kw) == default
    assert injected.draws == []
    for name in ("G", "D", "G_ema"):
        assert _same_params(getattr(default_nets, name), getattr(injected_nets, name)), name
    assert torch.equal(default_nets.mean_path_length, injected_nets.mean_path_length)


def test_pretrain_step_losses_follow_the_injected_latents():
    cfg = load_config(None, PRETRAIN)
    kw = dict(p=cfg.pretrain, step=1, ema_decay=0.9, generator=torch.Generator())  # step 1: no regularisers
    nets = _pretrain_nets(cfg)
    maps = nets.G.make_noise(2, generator=torch.Generator().manual_seed(0))

    def draws(seed):
        z = torch.randn(2, cfg.stylegan.latent_dim, generator=torch.Generator().manual_seed(seed))
        return [("styles", ([z], None)), ("noise", maps)] * 2

    first = pretrain_step(_pretrain_nets(cfg), _real(), noise=InjectedNoise(draws(0)), **kw)
    again = pretrain_step(_pretrain_nets(cfg), _real(), noise=InjectedNoise(draws(0)), **kw)
    other = pretrain_step(_pretrain_nets(cfg), _real(), noise=InjectedNoise(draws(1)), **kw)
    assert first == again
    assert other["loss_D"] != first["loss_D"] and other["fake_score"] != first["fake_score"]
    assert other["real_score"] == first["real_score"]  # D(x) does not see the latents


def test_finetune_step_with_injected_draws_equal_to_the_default_reproduces_it_exactly(source_file, clip_lpips):
    cfg = load_config(None, [*FINETUNE, "finetune.mixing_prob=0.9"])
    kw = dict(f=cfg.finetune, step=0, ema_decay=0.5, clip=clip_lpips[0], lpips=clip_lpips[1])
    default_nets, injected_nets = _finetune_nets(cfg, source_file), _finetune_nets(cfg, source_file)
    default = finetune_step(default_nets, _real(), generator=torch.Generator().manual_seed(4), **kw)
    recorder = RecordedNoise(torch.Generator().manual_seed(4), torch.device("cpu"))
    recorded = finetune_step(
        _finetune_nets(cfg, source_file), _real(), generator=torch.Generator(), noise=recorder, **kw
    )
    assert recorded == default
    # D step, then one z / noise list that G_s and G_t share, then L_patch's corners
    assert [kind for kind, _ in recorder.draws] == ["styles", "noise", "styles", "noise", "corners"]

    injected = finetune_step(
        injected_nets, _real(), generator=torch.Generator(), noise=InjectedNoise(recorder.draws), **kw
    )
    assert injected == default
    for name in ("G", "D", "G_ema"):
        assert _same_params(getattr(default_nets, name), getattr(injected_nets, name)), name


def test_finetune_patch_loss_follows_the_injected_corners(source_file, clip_lpips):
    cfg = load_config(None, FINETUNE)
    kw = dict(f=cfg.finetune, step=1, ema_decay=0.5, clip=clip_lpips[0], lpips=clip_lpips[1])
    recorder = RecordedNoise(torch.Generator().manual_seed(4), torch.device("cpu"))
    finetune_step(_finetune_nets(cfg, source_file), _real(), generator=torch.Generator(), noise=recorder, **kw)

    def with_corners(corners):
        draws = [*recorder.draws[:-1], ("corners", corners)]
        nets = _finetune_nets(cfg, source_file)
        return finetune_step(nets, _real(), generator=torch.Generator(), noise=InjectedNoise(draws), **kw)

    corners = torch.tensor([[0, 0], [16, 16], [0, 16], [16, 0]])
    shifted = torch.tensor([[4, 4], [8, 12], [12, 2], [1, 9]])  # (a permutation of the same crops would tie)
    first, again, other = with_corners(corners), with_corners(corners.clone()), with_corners(shifted)
    assert first == again
    assert other["loss_patch"] != first["loss_patch"]
    assert (other["loss_D"], other["loss_clip"]) == (first["loss_D"], first["loss_clip"])  # before / without crops
