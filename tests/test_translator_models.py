"""Stage 3 networks: CUT-compatible layout, feature taps, discriminators, projection heads."""

from __future__ import annotations

import pytest
import torch

from scenimefy.models.translator import (
    Downsample,
    PatchGANDiscriminator,
    PatchProjection,
    ResnetBlock,
    ResnetGenerator,
    Upsample,
    infer_generator_arch,
    init_weights,
    load_generator_state,
    strip_wrapper_prefixes,
)

TAPS = [0, 4, 8, 12, 16]


@pytest.fixture(scope="module")
def paper_generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=64, n_blocks=9)


@pytest.fixture()
def tiny_generator() -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, n_blocks=5)


# ----------------------------------------------------------------------------------------
# layout of the released checkpoint


def test_paper_generator_has_cut_parameter_count_and_state_entries(paper_generator):
    assert sum(p.numel() for p in paper_generator.parameters()) == 11_378_179
    state = paper_generator.state_dict()
    assert len(state) == 52
    assert sum(1 for _ in paper_generator.parameters()) == 48


def test_paper_generator_blur_buffers_match_cut(paper_generator):
    state = paper_generator.state_dict()
    filts = {k: tuple(v.shape) for k, v in state.items() if k.endswith("filt")}
    assert filts == {
        "model.7.filt": (128, 1, 3, 3),
        "model.11.filt": (256, 1, 3, 3),
        "model.21.filt": (256, 1, 4, 4),
        "model.25.filt": (128, 1, 4, 4),
    }
    assert torch.allclose(state["model.7.filt"][0, 0], torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0)
    assert torch.allclose(state["model.21.filt"][0, 0].sum(), torch.tensor(4.0))


def test_paper_generator_key_names_and_shapes(paper_generator):
    state = paper_generator.state_dict()
    assert tuple(state["model.1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(state["model.12.conv_block.1.weight"].shape) == (256, 256, 3, 3)
    assert tuple(state["model.20.conv_block.5.weight"].shape) == (256, 256, 3, 3)
    assert tuple(state["model.22.weight"].shape) == (128, 256, 3, 3)
    assert tuple(state["model.30.bias"].shape) == (3,)
    assert "model.21.filt" in state and "model.31.weight" not in state


def test_paper_generator_feature_channels(paper_generator):
    assert paper_generator.feature_channels(TAPS) == [3, 128, 256, 256, 256]


def test_init_is_xavier_normal_with_small_gain_and_zero_bias():
    torch.manual_seed(0)
    conv = init_weights(torch.nn.Conv2d(64, 64, 3), gain=0.02)
    fan = 64 * 9
    expected_std = 0.02 * (2.0 / (fan + fan)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert torch.count_nonzero(conv.bias) == 0


# ----------------------------------------------------------------------------------------
# resampling layers and blocks


def test_downsample_halves_and_keeps_constants():
    x = torch.full((2, 5, 16, 12), 0.7)
    y = Downsample(5)(x)
    assert y.shape == (2, 5, 8, 6)
    assert torch.allclose(y, torch.full_like(y, 0.7))


def test_upsample_doubles_and_keeps_constants():
    x = torch.full((1, 4, 6, 10), -0.3)
    y = Upsample(4)(x)
    assert y.shape == (1, 4, 12, 20)
    assert torch.allclose(y, torch.full_like(y, -0.3), atol=1e-6)
    assert tuple(Upsample(4).filt.shape) == (4, 1, 4, 4)


def test_upsample_interpolates_a_ramp_linearly_inside():
    # a linear ramp stays linear (away from the replicated border): [1,3,3,1] is bilinear
    x = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None, None]  # (1, 1, 8, 8)
    y = Upsample(1)(x)[0, 0, 4]
    steps = y[3:-3].diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.5), atol=1e-5)


def test_resnet_block_keys_and_residual():
    block = ResnetBlock(4)
    assert set(block.state_dict()) == {
        "conv_block.1.weight",
        "conv_block.1.bias",
        "conv_block.5.weight",
        "conv_block.5.bias",
    }
    torch.nn.init.zeros_(block.conv_block[5].weight)
    torch.nn.init.zeros_(block.conv_block[5].bias)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)  # zero residual branch: identity


# ----------------------------------------------------------------------------------------
# forward, taps


def test_tiny_generator_output_shape_and_range(tiny_generator):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = tiny_generator(x)
    assert y.shape == (2, 3, 32, 32)
    assert y.abs().max() <= 1.0
    assert y.std() > 0


def test_tiny_generator_feature_tap_shapes(tiny_generator):
    feats = tiny_generator.encode(torch.randn(1, 3, 32, 32), TAPS)
    assert [tuple(f.shape) for f in feats] == [
        (1, 3, 38, 38),
        (1, 16, 32, 32),
        (1, 32, 16, 16),
        (1, 32, 8, 8),
        (1, 32, 8, 8),
    ]
    assert tiny_generator.feature_channels(TAPS) == [3, 16, 32, 32, 32]


def test_tap_zero_is_the_reflection_padded_input(tiny_generator):
    x = torch.randn(1, 3, 16, 16)
    (tap0,) = tiny_generator.encode(x, [0])
    assert torch.equal(tap0[:, :, 3:-3, 3:-3], x)
    assert torch.equal(tap0[:, :, 2, 3:-3], x[:, :, 1])  # reflected row


def test_forward_with_features_matches_forward_and_encode(tiny_generator):
    x = torch.randn(2, 3, 32, 32)
    y, feats = tiny_generator.forward_with_features(x, TAPS)
    assert torch.equal(y, tiny_generator(x))
    for a, b in zip(feats, tiny_generator.encode(x, TAPS), strict=True):
        assert torch.equal(a, b)


def test_encode_returns_features_in_requested_order(tiny_generator):
    x = torch.randn(1, 3, 16, 16)
    f16, f4 = tiny_generator.encode(x, [16, 4])
    assert f16.shape[1] == 32 and f4.shape[1] == 16


def test_invalid_feature_layers_are_rejected(tiny_generator):
    n = len(tiny_generator.model)
    assert n == 28  # 12 + 5 blocks + 11
    with pytest.raises(ValueError, match=r"out of range.*0\.\.27"):
        tiny_generator.encode(torch.randn(1, 3, 16, 16), [0, 28])
    with pytest.raises(ValueError, match="duplicates"):
        tiny_generator.forward_with_features(torch.randn(1, 3, 16, 16), [4, 4])
    with pytest.raises(ValueError, match="at least one"):
        tiny_generator.encode(torch.randn(1, 3, 16, 16), [])


def test_generator_works_on_non_square_sizes(tiny_generator):
    assert tiny_generator(torch.randn(1, 3, 24, 40)).shape == (1, 3, 24, 40)


def test_generator_rejects_sizes_it_cannot_reproduce(tiny_generator):
    with pytest.raises(ValueError, match="multiples of 4 and >= 8, got 30x32"):
        tiny_generator(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="got 4x4"):
        tiny_generator.forward_with_features(torch.randn(1, 3, 4, 4), [0])


# ----------------------------------------------------------------------------------------
# loading released / saved weights


def test_round_trip_of_cut_style_state_dict(tiny_generator):
    x = torch.randn(1, 3, 32, 32)
    expected = tiny_generator(x)
    for prefix in ("", "module.", "module._orig_mod."):
        state = {prefix + k: v.clone() for k, v in tiny_generator.state_dict().items()}
        fresh = ResnetGenerator(ngf=8, n_blocks=5)
        assert not torch.equal(fresh(x), expected)
        load_generator_state(fresh, state)
        assert torch.equal(fresh(x), expected)


def test_infer_generator_arch_from_key_shapes(paper_generator, tiny_generator):
    assert infer_generator_arch(paper_generator.state_dict()) == {"ngf": 64, "n_blocks": 9}
    state = {"module." + k: v for k, v in tiny_generator.state_dict().items()}
    assert infer_generator_arch(state) == {"ngf": 8, "n_blocks": 5}
    with pytest.raises(ValueError, match="model.1.weight"):
        infer_generator_arch({"model.0.weight": torch.zeros(8, 3, 4, 4)})


def test_wrong_architecture_names_the_mismatch(tiny_generator):
    other = ResnetGenerator(ngf=4, n_blocks=6).state_dict()
    with pytest.raises(ValueError) as err:
        load_generator_state(tiny_generator, other)
    msg = str(err.value)
    assert "ResnetGenerator(ngf=8, n_blocks=5)" in msg
    assert "model.1.weight [4, 3, 7, 7] vs expected [8, 3, 7, 7]" in msg
    assert "unexpected keys" in msg and "model.17.conv_block.1.weight" in msg
    assert "ngf=4, n_blocks=6" in msg
    assert "\n" not in msg


def test_missing_keys_are_counted(tiny_generator):
    state = tiny_generator.state_dict()
    del state["model.26.weight"]  # the last conv of a 5-block generator
    del state["model.7.filt"]
    with pytest.raises(ValueError, match=r"2 missing keys \(model\.7\.filt, model\.26\.weight\)"):
        load_generator_state(ResnetGenerator(ngf=8, n_blocks=5), state)


def test_strip_wrapper_prefixes_only_strips_leading_wrappers():
    assert list(strip_wrapper_prefixes({"_orig_mod.module.model.1.weight": 0, "model.module.x": 1})) == [
        "model.1.weight",
        "model.module.x",
    ]


# ----------------------------------------------------------------------------------------
# discriminators


def test_unpaired_discriminator_gives_30x30_patches_at_256():
    d = PatchGANDiscriminator(in_channels=3, ndf=8, n_layers=3)
    out = d(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 1, 30, 30)


def test_discriminator_state_layout_matches_cut():
    d = PatchGANDiscriminator(in_channels=6, ndf=64, n_layers=3)
    state = d.state_dict()
    expected = {f"model.{i}.{p}" for i in (0, 3, 7, 11, 14) for p in ("weight", "bias")} | {
        f"model.{i}.filt" for i in (2, 6, 10)
    }
    assert set(state) == expected
    assert tuple(state["model.0.weight"].shape) == (64, 6, 4, 4)
    assert tuple(state["model.11.weight"].shape) == (512, 256, 4, 4)
    assert tuple(state["model.14.weight"].shape) == (1, 512, 4, 4)


def test_paired_discriminator_takes_six_channels():
    d = PatchGANDiscriminator(in_channels=6, ndf=8, n_layers=3)
    assert d(torch.randn(2, 6, 64, 64)).shape == (2, 1, 6, 6)
    with pytest.raises(RuntimeError):
        d(torch.randn(2, 3, 64, 64))


# ----------------------------------------------------------------------------------------
# patch projection heads


def test_patch_projection_is_normalised_per_image(tiny_generator):
    feats = tiny_generator.encode(torch.randn(2, 3, 32, 32), TAPS)
    head = PatchProjection(tiny_generator.feature_channels(TAPS), dim=16)
    assert len(head.mlps) == 5 and head.mlps[0][0].in_features == 3
    init_weights(head, gain=1.0)  # x / (|x| + 1e-7): the epsilon shows at gain 0.02's tiny outputs
    emb, ids = head(feats, num_patches=20, generator=torch.Generator().manual_seed(0))
    assert [tuple(e.shape) for e in emb] == [(2, 20, 16)] * 5
    for e in emb:
        assert torch.allclose(e.norm(dim=-1), torch.ones(2, 20), atol=1e-4)
    assert [len(i) for i in ids] == [20] * 5
    assert all(len(set(i.tolist())) == 20 for i in ids)


def test_patch_projection_caps_patches_at_positions():
    head = PatchProjection([4], dim=8)
    emb, ids = head([torch.randn(1, 4, 3, 3)], num_patches=256)
    assert emb[0].shape == (1, 9, 8)
    assert sorted(ids[0].tolist()) == list(range(9))


def test_patch_projection_reuses_given_ids():
    torch.manual_seed(1)
    head = PatchProjection([4, 6], dim=8)
    a = [torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)]
    b = [torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)]
    emb_a, ids = head(a, num_patches=5, generator=torch.Generator().manual_seed(3))
    emb_b, ids_b = head(b, num_patches=5, patch_ids=ids)
    assert all(torch.equal(x, y) for x, y in zip(ids, ids_b, strict=True))
    # the embedding of b at those ids is the MLP of b's feature vectors at those positions
    pos = ids[0][2].item()
    vec = b[0][0, :, pos // 8, pos % 8]
    expected = head.mlps[0](vec)
    assert torch.allclose(emb_b[0][0, 2], expected / (expected.norm() + 1e-7), atol=1e-6)
    # same ids again on a: same embeddings
    emb_a2, _ = head(a, num_patches=5, patch_ids=ids)
    assert torch.equal(emb_a[0], emb_a2[0])


def test_patch_ids_follow_the_random_generator():
    head = PatchProjection([4], dim=8)
    feat = [torch.randn(1, 4, 16, 16)]
    _, ids1 = head(feat, num_patches=32, generator=torch.Generator().manual_seed(0))
    _, ids2 = head(feat, num_patches=32, generator=torch.Generator().manual_seed(0))
    _, ids3 = head(feat, num_patches=32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids1[0], ids2[0])
    assert not torch.equal(ids1[0], ids3[0])


def test_patch_projection_checks_widths():
    head = PatchProjection([4], dim=8)
    with pytest.raises(ValueError, match="expects 4 channels, got 5"):
        head([torch.randn(1, 5, 4, 4)], num_patches=4)
    with pytest.raises(ValueError, match="1 taps, got 2"):
        head([torch.randn(1, 4, 4, 4)] * 2, num_patches=4)
