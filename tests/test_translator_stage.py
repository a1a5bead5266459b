"""Stage tier: the translator's step and worker loop in-process, with in-memory data."""

import numpy as np
import pytest
import torch
from stage_recorder import MemoryTracker, Recorder, random_translator_sources

from scenimefy.config import load_config
from scenimefy.stages.translator import (
    TranslatorNets,
    assemble_nets,
    build_networks,
    build_optimizers,
    random_patch_sampler,
    train_translator,
    translator_step,
)

TINY = [
    "translator.ngf=8",
    "translator.ndf=8",
    "translator.n_blocks=5",
    "translator.num_patches=16",
    "translator.head_dim=16",
    "translator.batch_size_per_worker=2",
    "translator.n_epochs=1",
    "translator.n_epochs_decay=1",
    "translator.log_every_steps=2",
    "translator.sample_every_steps=2",
    "translator.checkpoint_every_steps=100",
    "data.load_size=36",
    "data.crop_size=32",
    "run.num_workers=1",
    "run.torch_threads=1",
]


def _params(path):
    state = torch.load(f"{path}/state.pt", weights_only=True)
    return state["models"], state["progress"]


def test_loop_trains_logs_samples_and_checkpoints():
    cfg = load_config(None, [*TINY, "translator.steps_per_epoch=3"])
    rec, tracker = Recorder(), MemoryTracker()
    out = train_translator(cfg, random_translator_sources(), 3, rec.context(tracker))
    assert out["step"] == 6
    assert len(rec.checkpoints) == 2  # one per epoch
    steps = [s for s, _ in tracker.metrics]
    assert steps == [2, 4, 6]
    last = tracker.metrics[-1][1]
    for key in (
        "loss_G",
        "loss_D_U",
        "loss_D_P",
        "loss_src",
        "loss_hdce",
        "loss_hdce_ce",
        "loss_style_nce",
        "img_per_s",
        "lr",
    ):
        assert np.isfinite(last[key]), key
    assert last["lambda_sup"] == pytest.approx(np.cos(np.pi / 4))  # epoch 2 of 2
    assert tracker.images == ["samples/step_0000002.png", "samples/step_0000004.png", "samples/step_0000006.png"]
    models, progress = _params(rec.checkpoints[-1])
    assert progress == {"step": 6, "epoch": 3, "num_images_seen": 12}
    assert set(models) == {"G", "F", "F_s", "D_U", "D_P"}
    assert not any(k.startswith("module.") for k in models["G"])


def test_resume_mid_epoch_reproduces_an_uninterrupted_run_exactly():
    overrides = [*TINY, "translator.steps_per_epoch=4"]
    full = Recorder()
    train_translator(load_config(None, overrides), random_translator_sources(), 4, full.context())

    first = Recorder()
    train_translator(
        load_config(None, [*overrides, "translator.max_steps=3"]), random_translator_sources(), 4, first.context()
    )
    _, progress = _params(first.checkpoints[-1])
    assert progress["step"] == 3 and progress["epoch"] == 1

    second = Recorder(resume_from=first.checkpoints[-1])
    out = train_translator(load_config(None, overrides), random_translator_sources(), 4, second.context())
    assert out["step"] == 8
    a, _ = _params(full.checkpoints[-1])
    b, _ = _params(second.checkpoints[-1])
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after resume"


def test_resume_with_a_different_architecture_is_an_error():
    first = Recorder()
    train_translator(
        load_config(None, [*TINY, "translator.max_steps=1"]), random_translator_sources(), 2, first.context()
    )
    again = Recorder(resume_from=first.checkpoints[-1])
    with pytest.raises(ValueError, match="translator.ngf: checkpoint 8 vs config 16"):
        train_translator(
            load_config(None, [*TINY, "translator.ngf=16"]), random_translator_sources(), 2, again.context()
        )


def _nets(cfg):
    torch.manual_seed(0)
    modules = build_networks(cfg.translator)
    opts, scheds = build_optimizers(modules, cfg.translator)
    return TranslatorNets(**modules, optimizers=opts, schedulers=scheds)


def _step(cfg, nets, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y, xp, yp = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(4))
    return translator_step(nets, x, y, xp, yp, t=cfg.translator, epoch=1, total_epochs=2, generator=g)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _unchanged(before, module):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_projection_heads_learn_only_from_their_losses():
    cfg = load_config(None, [*TINY, "translator.lambda_style=0"])
    nets = _nets(cfg)
    f_s, f, g = _snapshot(nets.F_s), _snapshot(nets.F), _snapshot(nets.G)
    _step(cfg, nets)
    assert _unchanged(f_s, nets.F_s)  # StylePatchNCE off: F_s gets no gradient
    assert not _unchanged(f, nets.F) and not _unchanged(g, nets.G)

    cfg = load_config(None, [*TINY, "translator.lambda_src=0", "translator.lambda_hdce=0"])
    nets = _nets(cfg)
    f_s, f = _snapshot(nets.F_s), _snapshot(nets.F)
    _step(cfg, nets)
    assert _unchanged(f, nets.F) and not _unchanged(f_s, nets.F_s)


def test_lambda_sup_scales_only_the_generators_supervised_terms():
    """D_P's own update does not depend on lambda_sup; G's does."""
    cfg_on = load_config(None, TINY)
    cfg_off = load_config(None, [*TINY, "translator.lambda_sup_decay=false"])
    a, b = _nets(cfg_on), _nets(cfg_off)
    _step(cfg_on, a), _step(cfg_off, b)
    # epoch 1: lambda_sup = cos(0) = 1 either way, so both runs are identical
    for pa, pb in zip(a.G.parameters(), b.G.parameters()):
        assert torch.equal(pa, pb)
    m_on, _ = translator_step(
        a, *(torch.zeros(2, 3, 32, 32),) * 4, t=cfg_on.translator, epoch=2, total_epochs=2, generator=torch.Generator()
    )
    assert m_on["lambda_sup"] == pytest.approx(np.cos(np.pi / 4))


def test_g_step_calls_the_frozen_networks_without_their_gradients():
    # The G step's discriminator calls and the y^p encoding go through `nets.frozen` (bare,
    # not DDP-wrapped, compiled with the rest): D weights frozen, and no graph for y^p.
    cfg = load_config(None, TINY)
    nets = _nets(cfg)
    calls = []

    class Spy(torch.nn.Module):
        def __init__(self, name, module):
            super().__init__()
            self.name, self.module = name, module

        def forward(self, *args, **kwargs):
            frozen = not any(p.requires_grad for p in self.module.parameters())
            calls.append((self.name, torch.is_grad_enabled(), frozen, kwargs.get("encode_only", False)))
            return self.module(*args, **kwargs)

    nets.frozen = {name: Spy(name, m) for name, m in nets.frozen.items()}
    _step(cfg, nets)
    assert calls == [("D_U", True, True, False), ("D_P", True, True, False), ("G", False, False, True)]


def test_assembled_nets_wrap_for_updates_and_keep_bare_networks_for_frozen_uses():
    cfg = load_config(None, TINY)
    bare = build_networks(cfg.translator)
    opts, scheds = build_optimizers(bare, cfg.translator)
    wrap = lambda m: torch.nn.Sequential(m)  # noqa: E731 - stands for DDP
    nets = assemble_nets(bare, opts, scheds, wrap_ddp=wrap)
    for name in ("G", "F", "F_s", "D_U", "D_P"):
        assert isinstance(getattr(nets, name), torch.nn.Sequential) and getattr(nets, name)[0] is bare[name]
    assert {name: m is bare[name] for name, m in nets.frozen.items()} == {"G": True, "D_U": True, "D_P": True}


def test_step_metrics_and_d_updates():
    cfg = load_config(None, TINY)
    nets = _nets(cfg)
    d_u, d_p = _snapshot(nets.D_U), _snapshot(nets.D_P)
    metrics, images = _step(cfg, nets)
    assert not _unchanged(d_u, nets.D_U) and not _unchanged(d_p, nets.D_P)
    assert images["fake_x"].shape == (2, 3, 32, 32)
    assert metrics["gamma"] == pytest.approx(30.0)  # 50 -> 10 over 2 epochs: epoch 1 is halfway
    expected = (
        metrics["loss_G_gan"]
        + 0.05 * metrics["loss_src"]
        + 0.1 * metrics["loss_hdce"]
        + 1.0 * (metrics["loss_G_gan_p"] + 0.05 * metrics["loss_style_nce"])
    )
    assert metrics["loss_G"] == pytest.approx(expected, rel=1e-5)


def test_evaluation_hook_runs_at_epoch_ends_and_reaches_reports():
    cfg = load_config(None, [*TINY, "translator.n_epochs=2", "translator.n_epochs_decay=1", "evaluate.every_epochs=2"])
    rec, tracker, calls = Recorder(), MemoryTracker(), []

    def evaluate(G, epoch):
        calls.append(epoch)
        return {"fid": 100.0 / epoch, "l_bce": 4.5}

    ctx = rec.context(tracker)
    ctx.evaluate = evaluate
    train_translator(cfg, random_translator_sources(), 2, ctx)
    assert calls == [2, 3]  # every 2 epochs, and always at the last one
    assert [r.get("fid") for r in rec.reports] == [None, 50.0, 100.0 / 3]
    assert any(m.get("fid") == 50.0 for _, m in tracker.metrics)


def test_bf16_precision_autocasts_the_cpu_loop_and_keeps_fp32_weights():
    """translator.precision=bf16 applies on the CPU too (it pays where the CPU has AVX512-BF16)."""
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(
            None,
            [
                *TINY,
                "translator.steps_per_epoch=1",
                "translator.n_epochs_decay=0",
                "translator.log_every_steps=1",
                f"translator.precision={precision}",
            ],
        )
        rec, tracker = Recorder(), MemoryTracker()
        train_translator(cfg, random_translator_sources(), 1, rec.context(tracker))
        models, _ = _params(rec.checkpoints[-1])
        assert all(v.dtype == torch.float32 for v in models["G"].values() if v.is_floating_point())
        losses[precision] = tracker.metrics[-1][1]["loss_G"]
    assert np.isfinite(losses["bf16"])
    # the same seed and data: only the arithmetic differs (bf16 keeps ~3 significant digits)
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


# ----------------------------------------------------------------------------------------
# Reports reach the cluster at every epoch end, whatever the checkpoint interval


def test_a_checkpoint_interval_longer_than_the_run_still_gives_one_result_per_epoch():
    cfg = load_config(None, [*TINY, "translator.checkpoint_every_steps=1000000000"])
    rec, calls = Recorder(), []
    ctx = rec.context()
    ctx.evaluate = lambda G, epoch: calls.append(epoch) or {"fid": 10.0 * epoch}
    train_translator(cfg, random_translator_sources(), 3, ctx)
    assert [(r["step"], r["epoch"], r["fid"]) for r in rec.reports] == [(3.0, 1.0, 10.0), (6.0, 2.0, 20.0)]
    assert calls == [1, 2]


def test_mid_epoch_checkpoints_report_without_the_epoch_or_stale_scores():
    # epochs of 3 steps, a checkpoint every 2: steps 2 and 4 are checkpoints inside an epoch, and
    # Tune (ASHA's clock is `epoch`) must read only the reports of steps 3 and 6 as epoch results
    cfg = load_config(None, [*TINY, "translator.checkpoint_every_steps=2"])
    rec = Recorder()
    ctx = rec.context()
    ctx.evaluate = lambda G, epoch: {"fid": 10.0 * epoch}
    train_translator(cfg, random_translator_sources(), 3, ctx)
    assert [r["step"] for r in rec.reports] == [2.0, 3.0, 4.0, 6.0]
    assert rec.with_checkpoint == [True, True, True, True]
    assert [(r.get("epoch"), r.get("fid")) for r in rec.reports] == [
        (None, None),
        (1.0, 10.0),
        (None, None),
        (2.0, 20.0),
    ]
    assert all(np.isfinite(r["loss_G"]) for r in rec.reports)


# ----------------------------------------------------------------------------------------
# The patch-position seam of translator_step


def _recording_sampler(cfg, generator, record):
    draw = random_patch_sampler(cfg.translator.num_patches, generator)

    def sample(feats):
        ids = draw(feats)
        record.append(([tuple(f.shape) for f in feats], [i.clone() for i in ids]))
        return ids

    return sample


def _params_of(nets):
    return [p.detach().clone() for name in ("G", "F", "F_s", "D_U", "D_P") for p in getattr(nets, name).parameters()]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(4)]


def test_injected_positions_equal_to_the_default_draw_reproduce_the_default_step_exactly():
    cfg = load_config(None, TINY)
    default_nets, injected_nets = _nets(cfg), _nets(cfg)
    kw = dict(t=cfg.translator, epoch=1, total_epochs=2)
    default, _ = translator_step(default_nets, *_inputs(), **kw, generator=torch.Generator().manual_seed(5))

    record = []
    sampler = _recording_sampler(cfg, torch.Generator().manual_seed(5), record)
    recorded, _ = translator_step(_nets(cfg), *_inputs(), **kw, generator=torch.Generator(), patch_sampler=sampler)
    assert recorded == default  # the recording sampler draws what the step draws by default
    # called for the unsupervised branch (G(x) and G(y): 2B images) and then for StylePatchNCE (y^p: B)
    assert [shapes[0][0] for shapes, _ in record] == [4, 2]
    assert all(len(ids) == len(cfg.translator.nce_layers) for _, ids in record)

    replay = iter([ids for _, ids in record])
    injected, _ = translator_step(
        injected_nets, *_inputs(), **kw, generator=torch.Generator(), patch_sampler=lambda feats: next(replay)
    )
    assert injected == default
    for a, b in zip(_params_of(default_nets), _params_of(injected_nets), strict=True):
        assert torch.equal(a, b)


def test_the_same_injected_positions_give_the_same_losses_and_other_positions_other_losses():
    cfg = load_config(None, TINY)
    kw = dict(t=cfg.translator, epoch=1, total_epochs=2, generator=torch.Generator())

    def fixed(offset):
        return lambda feats: [torch.arange(offset, offset + 16) % (f.shape[-2] * f.shape[-1]) for f in feats]

    first, _ = translator_step(_nets(cfg), *_inputs(), **kw, patch_sampler=fixed(0))
    again, _ = translator_step(_nets(cfg), *_inputs(), **kw, patch_sampler=fixed(0))
    other, _ = translator_step(_nets(cfg), *_inputs(), **kw, patch_sampler=fixed(7))
    assert first == again
    for key in ("loss_src", "loss_hdce", "loss_style_nce"):
        assert other[key] != first[key], key
    # the discriminators' updates come before the patches are drawn: their losses do not depend on them
    assert (other["loss_D_U"], other["loss_D_P"]) == (first["loss_D_U"], first["loss_D_P"])
