"""Reading and writing rosinality-format StyleGAN2 checkpoints."""

import argparse
import os

import pytest
import torch

from scenimefy.models.rosinality import (
    build_from_rosinality,
    infer_generator_architecture,
    load_rosinality_checkpoint,
    save_rosinality_checkpoint,
)
from scenimefy.models.stylegan2 import Discriminator, Generator

TINY = dict(channel_multiplier=1, channel_base=256, channel_max=32)


def tiny_models(seed=0, size=32, **arch):
    torch.manual_seed(seed)
    arch = arch or TINY
    g = Generator(size, 16, 2, **arch)
    d = Discriminator(size, **arch)
    g_ema = Generator(size, 16, 2, **arch)
    g_ema.load_state_dict(g.state_dict())
    for m in (g, g_ema):  # make noise strengths non-zero so noise handling is exercised
        for conv in m.convs:
            conv.noise.weight.data.normal_()
    return g, d, g_ema


def adam_after_one_step(module):
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, betas=(0.0, 0.99))
    sum(p.sum() for p in module.parameters()).backward()
    opt.step()
    return opt


def test_round_trip_gives_identical_outputs(tmp_path):
    g, d, g_ema = tiny_models()
    g_optim, d_optim = adam_after_one_step(g), adam_after_one_step(d)
    path = tmp_path / "000100.pt"
    save_rosinality_checkpoint(path, g, d, g_ema, g_optim, d_optim, {"batch": 4, "r1": 10.0}, ada_aug_p=0.1)
    assert sorted(os.listdir(tmp_path)) == ["000100.pt"]  # no temp file left behind

    ckpt = load_rosinality_checkpoint(path)
    assert set(ckpt) == {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
    g2, d2, g_ema2, info = build_from_rosinality(ckpt)
    assert info["size"] == 32 and info["style_dim"] == 16 and info["n_mlp"] == 2
    assert info["args"] == {"batch": 4, "r1": 10.0} and info["ada_aug_p"] == pytest.approx(0.1)

    w = torch.randn(2, 16)
    noise = g.make_noise(2, generator=torch.Generator().manual_seed(0))
    for ours, theirs in ((g, g2), (g_ema, g_ema2)):
        a, _ = ours([w], input_is_latent=True, noise=noise)
        b, _ = theirs([w], input_is_latent=True, noise=noise)
        assert torch.equal(a, b)
        a, _ = ours([w], input_is_latent=True, randomize_noise=False)  # stored noise buffers
        b, _ = theirs([w], input_is_latent=True, randomize_noise=False)
        assert torch.equal(a, b)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(d(x), d2(x))

    # optimiser states restore into fresh optimisers
    opt = torch.optim.Adam(g2.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt.load_state_dict(info["g_optim"])
    assert opt.state_dict()["state"][0]["step"] == 1


def test_round_trip_at_rosinality_widths(tmp_path):
    # 64 px / channel_multiplier 1 uses rosinality's own channel table (512, ..., 256 at 64 px)
    torch.manual_seed(0)
    g, d = Generator(64, 8, 1, channel_multiplier=1), Discriminator(64, channel_multiplier=1)
    save_rosinality_checkpoint(tmp_path / "c.pt", g, d, g, None, None, {})
    _, _, g_ema, info = build_from_rosinality(load_rosinality_checkpoint(tmp_path / "c.pt"))
    assert (info["channel_multiplier"], info["channel_base"], info["channel_max"]) == (1, 16384, 512)
    assert g_ema.channels == g.channels


def test_infer_architecture_of_rosinality_256_cm2():
    torch.manual_seed(0)
    state = Generator(256, 512, 8, channel_multiplier=2).state_dict()
    arch = infer_generator_architecture(state)
    assert arch["size"] == 256 and arch["style_dim"] == 512 and arch["n_mlp"] == 8
    assert arch["channel_multiplier"] == 2 and arch["channels"][256] == 128


def test_loads_rosinality_namespace_args(tmp_path):
    g, d, g_ema = tiny_models()
    args = argparse.Namespace(size=32, batch=16, lr=0.002, augment=False, path="/data/lhq")
    # rosinality's layout, args pickled as a Namespace
    torch.save(
        {"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
         "g_optim": None, "d_optim": None, "args": args, "ada_aug_p": 0.0},
        tmp_path / "ro.pt",
    )  # fmt: skip
    ckpt = load_rosinality_checkpoint(tmp_path / "ro.pt")
    assert ckpt["args"] == vars(args)
    _, _, _, info = build_from_rosinality(ckpt)
    assert info["args"]["batch"] == 16


def test_checkpoint_with_only_g_ema(tmp_path):
    _, _, g_ema = tiny_models()
    torch.save({"g_ema": g_ema.state_dict()}, tmp_path / "ema.pt")
    g, d, g_ema2, _ = build_from_rosinality(load_rosinality_checkpoint(tmp_path / "ema.pt"))
    assert g is None and d is None
    assert all(torch.equal(a, b) for a, b in zip(g_ema.state_dict().values(), g_ema2.state_dict().values()))


def test_mismatched_size_names_both(tmp_path):
    g, d, g_ema = tiny_models(size=64, channel_multiplier=1, channel_base=256, channel_max=32)
    save_rosinality_checkpoint(tmp_path / "c.pt", g, d, g_ema, None, None, {})
    ckpt = load_rosinality_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"checkpoint is 64 px .*config asks for 32 px"):
        build_from_rosinality(ckpt, expected_size=32, expected_channel_multiplier=1,
                              expected_channel_base=256, expected_channel_max=32)  # fmt: skip


def test_mismatched_channel_multiplier_names_both(tmp_path):
    torch.manual_seed(0)
    g = Generator(64, 8, 1, channel_multiplier=1)
    d = Discriminator(64, channel_multiplier=1)
    save_rosinality_checkpoint(tmp_path / "c.pt", g, d, g, None, None, {})
    ckpt = load_rosinality_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"checkpoint is 64 px with channel_multiplier 1.*config asks for 64 px / 2"):
        build_from_rosinality(ckpt, expected_size=64, expected_channel_multiplier=2)
    g2, _, _, _ = build_from_rosinality(ckpt, expected_size=64, expected_channel_multiplier=1)
    assert g2.channels[64] == 256


def test_strict_loading_rejects_a_corrupted_state_dict(tmp_path):
    g, d, g_ema = tiny_models()
    state = g.state_dict()
    del state["convs.1.noise.weight"]
    torch.save({"g": state, "d": d.state_dict(), "g_ema": g_ema.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'g' does not match"):
        build_from_rosinality(load_rosinality_checkpoint(tmp_path / "bad.pt"))


def test_unreadable_file_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_rosinality_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*not a rosinality"):
        load_rosinality_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_rosinality_checkpoint(tmp_path / "missing.pt")


class _Pickled:
    pass


def test_a_file_of_pickled_objects_is_refused_without_pytorchs_unsafe_advice(tmp_path):
    torch.save({"g_ema": _Pickled()}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match=r"objects.pt.*pickles Python objects, which are never loaded") as caught:
        load_rosinality_checkpoint(tmp_path / "objects.pt")
    assert "weights_only=False" not in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt.*the file is empty"):
        load_rosinality_checkpoint(tmp_path / "empty.pt")


def test_saved_file_loads_with_plain_weights_only(tmp_path):
    g, d, g_ema = tiny_models()
    save_rosinality_checkpoint(tmp_path / "c.pt", g, d, g_ema, None, None, argparse.Namespace(batch=8))
    ckpt = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)  # no allow-list needed
    assert ckpt["args"] == {"batch": 8}
