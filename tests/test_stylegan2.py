"""StyleGAN2 in pure PyTorch: the ops, the networks' shapes and semantics, rosinality's names
and sizes, and the Stage-1 freezing rule."""

import math

import pytest
import torch

from scenimefy.models.ops import fused_leaky_relu, make_kernel, upfirdn2d
from scenimefy.models.stylegan2 import (
    Discriminator,
    Generator,
    channel_table,
    freeze_for_finetuning,
    minibatch_stddev,
    trainable_block_prefixes,
)

TINY = dict(channel_multiplier=1, channel_base=256, channel_max=32)  # 32 px: channels 32, 32, 16, 8


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(32, 16, 2, **TINY)


# ----------------------------------------------------------------------------------------
# ops


def upfirdn2d_loop(x, kernel, up, down, pad):
    """Literal reference: zero insertion, pad / crop, true convolution, decimation."""
    p0, p1 = pad
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    upsampled = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    upsampled[:, :, ::up, ::up] = x
    n_h, n_w = h * up + p0 + p1, w * up + p0 + p1
    padded = torch.zeros(b, c, n_h, n_w, dtype=x.dtype)
    for i in range(n_h):
        for j in range(n_w):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[:, :, i, j] = upsampled[:, :, si, sj]
    out_h, out_w = (n_h - kh) // down + 1, (n_w - kw) // down + 1
    out = torch.zeros(b, c, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            acc = torch.zeros(b, c, dtype=x.dtype)
            for u in range(kh):
                for v in range(kw):
                    # true convolution: kernel index reversed
                    acc += padded[:, :, i * down + u, j * down + v] * kernel[kh - 1 - u, kw - 1 - v]
            out[:, :, i, j] = acc
    return out


def test_make_kernel_is_normalised_outer_product():
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4)
    assert torch.allclose(k, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert k.sum().item() == pytest.approx(1.0)


def test_upfirdn2d_hand_computed_case():
    # one row [1, 2], upsampled 2x along W only, kernel [[1, 2]] (a true convolution flips it)
    x = torch.tensor([[[[1.0, 2.0]]]])
    kernel = torch.tensor([[1.0, 2.0]])
    # up: [1, 0, 2, 0]; pad W (1 before, 0 after): [0, 1, 0, 2, 0]; out[i] = 2 p[i] + p[i+1]
    out = upfirdn2d(x, kernel, up=(2, 1), pad=(1, 0, 0, 0))
    assert out.shape == (1, 1, 1, 4)
    assert torch.equal(out[0, 0, 0], torch.tensor([1.0, 2.0, 2.0, 4.0]))
    # a negative pad crops: [1, 0, 2, 0] -> 1 before, 1 cropped after: [0, 1, 0, 2] -> [1, 2, 2]
    out = upfirdn2d(x, kernel, up=(2, 1), pad=(1, -1, 0, 0))
    assert torch.equal(out[0, 0, 0], torch.tensor([1.0, 2.0, 2.0]))
    # box filter 2x2 with pad 1 and down 2 on a 2x2 image: each output sees one input sample
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = upfirdn2d(x, torch.ones(2, 2), down=2, pad=(1, 1))
    assert torch.equal(out, x)
    # up 2 on both axes with the [1, 3, 3, 1] upsampling kernel (x4) keeps a constant image constant
    ones = torch.ones(1, 1, 3, 3)
    up = upfirdn2d(ones, make_kernel([1, 3, 3, 1]) * 4, up=2, pad=(2, 1))
    assert up.shape == (1, 1, 6, 6)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 2, 2))


def test_upfirdn2d_identity_kernel_is_noop():
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(upfirdn2d(x, torch.ones(1, 1)), x)


@pytest.mark.parametrize(
    "up, down, pad",
    [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (2, 2)), (2, 2, (1, 1)), (1, 1, (-1, 2)), (2, 1, (-2, 0)), (3, 2, (0, -1))],
)
def test_upfirdn2d_matches_loop_reference(up, down, pad):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    kernel = torch.randn(4, 3, dtype=torch.float64)  # asymmetric: catches a missing flip
    ours = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    ref = upfirdn2d_loop(x, kernel, up, down, pad)
    assert ours.shape == ref.shape
    expected_h = (5 * up + pad[0] + pad[1] - 4) // down + 1
    assert ours.shape[2] == expected_h
    assert torch.allclose(ours, ref, atol=1e-12)


def test_fused_leaky_relu_values():
    x = torch.tensor([[[[1.0]], [[-1.0]]]])  # (1, 2, 1, 1)
    bias = torch.tensor([0.5, 0.25])
    out = fused_leaky_relu(x, bias)
    assert out.flatten().tolist() == pytest.approx([1.5 * math.sqrt(2), -0.75 * 0.2 * math.sqrt(2)])
    # 2-D inputs (linear layers) add the bias along dim 1 too
    assert fused_leaky_relu(torch.zeros(3, 2), bias).shape == (3, 2)


def test_fused_leaky_relu_supports_double_backward():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused_leaky_relu, (x, bias))
    assert torch.autograd.gradgradcheck(fused_leaky_relu, (x, bias))


@pytest.mark.parametrize(
    "up, down, pad", [(2, 1, (2, 1)), (1, 2, (2, 2)), (1, 2, (1, 1)), (2, 2, (-1, 3)), (3, 2, (0, -1)), (1, 1, (1, 2))]
)
def test_upfirdn2d_derivatives_match_autograd_of_the_composite(up, down, pad):
    # the backward pass is an explicit adjoint (itself an upfirdn2d): compare first and second
    # derivatives with autograd through plain ops (a kernel requiring grad takes that path)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    k = torch.randn(4, 3, dtype=torch.float64)  # asymmetric, odd sizes
    weights = torch.randn_like(upfirdn2d(x, k, up=up, down=down, pad=pad))
    grads = []
    for kernel in (k, k.clone().requires_grad_()):
        xi = x.clone().requires_grad_()
        y = upfirdn2d(xi, kernel, up=up, down=down, pad=pad)
        (g1,) = torch.autograd.grad((y.tanh() * weights).sum(), xi, create_graph=True)
        (g2,) = torch.autograd.grad(g1.square().sum(), xi)  # R1-like: differentiates the adjoint
        grads.append((g1.detach(), g2))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)
    f = lambda t: upfirdn2d(t, k, up=up, down=down, pad=pad)  # noqa: E731
    x1 = x[:1, :2].clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x1,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x1,), fast_mode=True)


def test_upfirdn2d_kernel_gradient_takes_the_autograd_path():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: upfirdn2d(a, b, up=2, pad=(1, 1)), (x, k), fast_mode=True)


# ----------------------------------------------------------------------------------------
# networks at 32 px, tiny widths


def test_channel_table_matches_rosinality():
    assert channel_table(256, channel_multiplier=2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    assert channel_table(1024, channel_multiplier=1)[1024] == 16
    assert channel_table(32, **TINY) == {4: 32, 8: 32, 16: 16, 32: 8}


def test_unsupported_size_is_an_error():
    with pytest.raises(ValueError, match="size must be one of"):
        Generator(48, 16, 2, **TINY)


def test_generator_output_shape_and_range():
    g = tiny_generator()
    img, latents = g([torch.randn(4, 16)], return_latents=True)
    assert img.shape == (4, 3, 32, 32)
    assert latents.shape == (4, g.n_latent, 16) == (4, 8, 16)
    assert torch.isfinite(img).all()
    assert img.abs().max() < 20  # nominal [-1, 1]; untrained but no blow-up
    assert g.num_layers == 7 and len(g.make_noise()) == 7


def test_generator_fixed_noise_is_deterministic_and_shared_noise_matches():
    g = tiny_generator()
    z = torch.randn(2, 16)
    a, _ = g(z, randomize_noise=False)
    b, _ = g(z, randomize_noise=False)
    assert torch.equal(a, b)
    for conv in g.convs:  # noise strength starts at 0: make noise matter
        conv.noise.weight.data.fill_(0.5)
    noise = g.make_noise(2, generator=torch.Generator().manual_seed(1))
    assert [tuple(n.shape) for n in noise][:3] == [(2, 1, 4, 4), (2, 1, 8, 8), (2, 1, 8, 8)]
    c, _ = g(z, noise=noise)
    d, _ = g(z, noise=noise)
    e, _ = g(z)
    assert torch.equal(c, d)
    assert not torch.allclose(c, e)


def test_truncation_zero_gives_mean_latent_image():
    g = tiny_generator()
    w_mean = g.mean_latent(64, generator=torch.Generator().manual_seed(0))
    assert w_mean.shape == (1, 16)
    noise = g.make_noise()
    truncated, _ = g([torch.randn(3, 16)], truncation=0.0, truncation_latent=w_mean, noise=noise)
    mean_img, _ = g([w_mean], input_is_latent=True, noise=noise)
    assert torch.allclose(truncated, mean_img.expand(3, -1, -1, -1), atol=1e-5)


def test_truncation_without_mean_latent_is_an_error():
    with pytest.raises(ValueError, match="truncation_latent"):
        tiny_generator()([torch.randn(1, 16)], truncation=0.5)


def test_mean_latent_is_reproducible_with_a_generator():
    g = tiny_generator()
    a = g.mean_latent(32, generator=torch.Generator().manual_seed(3))
    b = g.mean_latent(32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_style_mixing_uses_first_style_before_inject_index():
    g = tiny_generator()
    w1, w2 = torch.randn(2, 16), torch.randn(2, 16)
    _, latents = g([w1, w2], input_is_latent=True, inject_index=3, return_latents=True)
    assert torch.equal(latents[:, :3], w1[:, None].expand(2, 3, 16))
    assert torch.equal(latents[:, 3:], w2[:, None].expand(2, 5, 16))
    # z inputs go through the mapping network first
    z1, z2 = torch.randn(2, 16), torch.randn(2, 16)
    _, latents = g([z1, z2], inject_index=5, return_latents=True)
    assert torch.allclose(latents[:, 0], g.style(z1)) and torch.allclose(latents[:, 7], g.style(z2))


def test_style_mixing_draws_inject_index_in_range():
    g = tiny_generator()
    w1, w2 = torch.zeros(1, 16), torch.ones(1, 16)
    for seed in range(10):
        torch.manual_seed(seed)
        _, latents = g([w1, w2], input_is_latent=True, return_latents=True)
        k = int((latents[0, :, 0] == 0).sum())
        assert 1 <= k <= g.n_latent - 1
        assert torch.all(latents[0, :k] == 0) and torch.all(latents[0, k:] == 1)


def test_sample_mixing_styles():
    g = tiny_generator()
    zs, index = g.sample_mixing_styles(3, mixing_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert len(zs) == 2 and zs[0].shape == (3, 16) and 1 <= index <= g.n_latent - 1
    zs, index = g.sample_mixing_styles(3, mixing_prob=0.0)
    assert len(zs) == 1 and index is None
    a = g.sample_mixing_styles(2, mixing_prob=0.5, generator=torch.Generator().manual_seed(7))
    b = g.sample_mixing_styles(2, mixing_prob=0.5, generator=torch.Generator().manual_seed(7))
    assert a[1] == b[1] and all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    n_mixed = sum(
        len(g.sample_mixing_styles(1, mixing_prob=0.9, generator=torch.Generator().manual_seed(s))[0]) == 2
        for s in range(200)
    )
    assert 160 <= n_mixed <= 195


def test_z_input_must_be_two_dimensional():
    with pytest.raises(ValueError, match="input_is_latent"):
        tiny_generator()([torch.randn(2, 8, 16)])


def test_w_plus_input_is_used_per_layer():
    g = tiny_generator()
    w = torch.randn(2, 16)
    noise = g.make_noise()
    a, _ = g([w], input_is_latent=True, noise=noise)
    b, _ = g([w[:, None].repeat(1, g.n_latent, 1)], input_is_latent=True, noise=noise)
    assert torch.allclose(a, b, atol=1e-6)


def test_generator_gradients_reach_the_mapping_network():
    g = tiny_generator()
    img, _ = g([torch.randn(2, 16)])
    img.square().mean().backward()
    assert g.style[1].weight.grad is not None and g.style[1].weight.grad.abs().sum() > 0


def test_discriminator_output_shape():
    torch.manual_seed(0)
    d = Discriminator(32, **TINY)
    out = d(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    with pytest.raises(ValueError, match="not divisible"):
        d(torch.randn(6, 3, 32, 32))


def test_minibatch_stddev_groups_members_by_stride():
    # B = 4, G = 4: one sub-group; its std is the same for every sample
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(4, 1, 1, 1).expand(4, 2, 2, 2).contiguous()
    out = minibatch_stddev(x, 4)
    assert out.shape == (4, 3, 2, 2)
    expected = math.sqrt(torch.tensor([0.0, 1, 2, 3]).var(unbiased=False).item() + 1e-8)
    assert torch.allclose(out[:, 2], torch.full((4, 2, 2), expected))
    # B = 8, G = 4: sub-group m holds samples m, m + 2, m + 4, m + 6 (rosinality's layout)
    values = torch.arange(8.0) ** 2
    out = minibatch_stddev(values.reshape(8, 1, 1, 1), 4)[:, 1, 0, 0]
    std = [values[m::2].var(unbiased=False).add(1e-8).sqrt() for m in (0, 1)]
    assert torch.allclose(out, torch.stack([std[b % 2] for b in range(8)]))


def test_discriminator_r1_double_backward_runs():
    torch.manual_seed(0)
    d = Discriminator(32, **TINY)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert d.convs[0][0].weight.grad is not None


# ----------------------------------------------------------------------------------------
# rosinality's sizes and names (256 px, channel_multiplier 2)


@pytest.fixture(scope="module")
def models_256():
    torch.manual_seed(0)
    return Generator(256, 512, 8, channel_multiplier=2), Discriminator(256, channel_multiplier=2)


def test_parameter_and_entry_counts_match_rosinality(models_256):
    g, d = models_256
    assert sum(p.numel() for p in g.parameters()) == 30_034_338
    assert len(g.state_dict()) == 135
    assert len(list(g.parameters())) == 110 and len(list(g.buffers())) == 25
    assert sum(p.numel() for p in d.parameters()) == 28_864_129
    assert len(d.state_dict()) == 50


def test_generator_keys_and_shapes_match_rosinality(models_256):
    state = models_256[0].state_dict()
    expected = {
        "style.1.weight": (512, 512),
        "style.8.bias": (512,),
        "input.input": (1, 512, 4, 4),
        "conv1.conv.weight": (1, 512, 512, 3, 3),
        "conv1.conv.modulation.weight": (512, 512),
        "conv1.conv.modulation.bias": (512,),
        "conv1.noise.weight": (1,),
        "conv1.activate.bias": (512,),
        "to_rgb1.bias": (1, 3, 1, 1),
        "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
        "convs.10.conv.weight": (1, 128, 256, 3, 3),
        "convs.10.conv.modulation.weight": (256, 512),
        "convs.10.conv.blur.kernel": (4, 4),
        "convs.11.activate.bias": (128,),
        "convs.11.noise.weight": (1,),
        "to_rgbs.5.conv.weight": (1, 3, 128, 1, 1),
        "to_rgbs.5.upsample.kernel": (4, 4),
        "to_rgbs.0.conv.modulation.bias": (512,),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_2": (1, 1, 8, 8),
        "noises.noise_12": (1, 1, 256, 256),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "convs.1.conv.blur.kernel" not in state  # only the upsampling convs blur
    assert "style.0.weight" not in state  # PixelNorm has no parameters


def test_discriminator_keys_and_shapes_match_rosinality(models_256):
    state = models_256[1].state_dict()
    expected = {
        "convs.0.0.weight": (128, 3, 1, 1),
        "convs.0.1.bias": (128,),
        "convs.1.conv1.0.weight": (128, 128, 3, 3),
        "convs.1.conv1.1.bias": (128,),
        "convs.1.conv2.0.kernel": (4, 4),
        "convs.1.conv2.1.weight": (256, 128, 3, 3),
        "convs.1.conv2.2.bias": (256,),
        "convs.1.skip.0.kernel": (4, 4),
        "convs.1.skip.1.weight": (256, 128, 1, 1),
        "convs.6.conv2.1.weight": (512, 512, 3, 3),
        "final_conv.0.weight": (512, 513, 3, 3),
        "final_conv.1.bias": (512,),
        "final_linear.0.weight": (512, 8192),
        "final_linear.0.bias": (512,),
        "final_linear.1.weight": (1, 512),
        "final_linear.1.bias": (1,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "convs.1.skip.1.bias" not in state


def test_blur_kernels_are_scaled_for_upsampling(models_256):
    g, d = models_256
    assert g.convs[0].conv.blur.kernel.sum().item() == pytest.approx(4.0)
    assert g.to_rgbs[0].upsample.kernel.sum().item() == pytest.approx(4.0)
    assert d.convs[1].conv2[0].kernel.sum().item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------
# Stage-1 freezing


def test_trainable_block_prefixes_at_256():
    assert trainable_block_prefixes(256, 3) == [
        "convs.6", "convs.7", "convs.8", "convs.9", "convs.10", "convs.11",
        "to_rgbs.3", "to_rgbs.4", "to_rgbs.5",
    ]  # fmt: skip
    assert trainable_block_prefixes(256, 1) == ["convs.10", "convs.11", "to_rgbs.5"]
    assert trainable_block_prefixes(256, 0) == []
    with pytest.raises(ValueError, match="choose 0..6"):
        trainable_block_prefixes(256, 7)


@pytest.mark.parametrize("n, expected", [(3, 8_510_863), (1, 705_669)])
def test_freeze_for_finetuning_trainable_counts(models_256, n, expected):
    g = models_256[0]
    names = freeze_for_finetuning(g, n)
    assert sum(p.numel() for p in g.parameters() if p.requires_grad) == expected
    assert set(names) == {name for name, p in g.named_parameters() if p.requires_grad}
    for p in g.parameters():
        p.requires_grad_(True)


def test_freezing_uses_exact_module_prefixes():
    g = Generator(256, 16, 2, channel_multiplier=1, channel_base=1024, channel_max=16)
    names = freeze_for_finetuning(g, 1)  # convs.10, convs.11, to_rgbs.5
    assert any(n.startswith("convs.10.") for n in names)
    assert not any(n.startswith(("convs.1.", "convs.0.")) for n in names)  # 'convs.1' is not 'convs.10'
    frozen = [n for n, p in g.named_parameters() if not p.requires_grad]
    for prefix in ("style.", "input.", "conv1.", "to_rgb1.", "convs.1.", "to_rgbs.4."):
        assert any(n.startswith(prefix) for n in frozen), prefix
    assert all(n.startswith(("convs.10.", "convs.11.", "to_rgbs.5.")) for n in names)
    # modulation, noise strength and activation bias of each trainable block all train
    assert {"convs.10.conv.modulation.weight", "convs.10.noise.weight", "convs.11.activate.bias"} <= set(names)
