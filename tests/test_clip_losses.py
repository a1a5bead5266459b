"""Stage-1 CLIP losses: D_CLIP (Eq. 1) and the CLIP patch contrastive loss L_patch (Eq. 2)."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_priors import tiny_priors_config

from scenimefy.losses.clip_losses import clip_distance, clip_patch_nce, crop_patches, random_patch_corners
from scenimefy.priors.loading import load_clip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: OpenMP spinning costs more than it gains here
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    cfg = tiny_priors_config(tmp_path_factory.mktemp("priors"), lpips=False, mask2former=False)
    return load_clip(cfg)


def _images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_clip_distance_of_an_image_with_itself_is_zero(clip):
    x = _images(3)
    e = clip(x)
    assert clip_distance(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert clip_distance(e, clip(_images(3, seed=1))).item() > 0


def test_clip_distance_is_mean_of_one_minus_cosine():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [-2.0, 0.0]])  # orthogonal (1 - 0), opposite (1 + 1); norms do not matter
    assert clip_distance(a, b).item() == pytest.approx((1.0 + 2.0) / 2)


def test_clip_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        clip_distance(torch.ones(2, 4), torch.ones(3, 4))


def test_corners_cover_every_valid_position_and_are_reproducible():
    g = torch.Generator().manual_seed(0)
    corners = random_patch_corners(8, 6, 500, g)
    assert corners.shape == (500, 2) and corners.dtype == torch.int64
    assert corners.min() == 0 and corners.max() == 2  # 0 .. size - patch_size, the last included
    again = random_patch_corners(8, 6, 500, torch.Generator().manual_seed(0))
    assert torch.equal(corners, again)
    assert random_patch_corners(8, 8, 2, g).eq(0).all()  # a patch the size of the image


@pytest.mark.parametrize(
    "size, patch, count, message", [(32, 33, 4, "does not fit"), (32, 0, 4, "does not fit"), (32, 8, 1, "at least 2")]
)
def test_corners_reject_bad_sizes(size, patch, count, message):
    with pytest.raises(ValueError, match=message):
        random_patch_corners(size, patch, count, torch.Generator())


def test_crop_patches_takes_the_same_window_of_every_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    corners = torch.tensor([[0, 0], [2, 3]])
    crops = crop_patches(x, corners, 3)
    assert crops.shape == (2, 2, 3, 3, 3)
    assert torch.equal(crops[1, 1], x[1, :, 2:5, 3:6])
    assert torch.equal(crops[0, 0], x[0, :, 0:3, 0:3])


def _quadrants(x):
    """The 4 quadrants of each image cycled one place: same content, other positions."""
    h = x.shape[-1] // 2
    q = [x[..., :h, :h], x[..., :h, h:], x[..., h:, :h], x[..., h:, h:]]
    q = q[1:] + q[:1]
    return torch.cat([torch.cat(q[:2], -1), torch.cat(q[2:], -1)], -2)


def test_patch_loss_is_lower_for_aligned_than_for_shuffled_patches(clip):
    x = _images(2, size=32)
    corners = torch.tensor([[0, 0], [0, 16], [16, 0], [16, 16]])  # the four quadrants
    aligned = clip_patch_nce(clip, x, x.clone(), corners=corners, patch_size=16, tau=0.1)
    shuffled = clip_patch_nce(clip, x, _quadrants(x), corners=corners, patch_size=16, tau=0.1)
    assert aligned.item() < shuffled.item()
    # aligned: every query equals its positive key, so no crop can score higher
    assert aligned.item() < math.log(4)


def test_patch_loss_of_a_batch_is_the_mean_of_per_image_losses(clip):
    x, y = _images(3, seed=0), _images(3, seed=1)
    corners = random_patch_corners(32, 12, 5, torch.Generator().manual_seed(3))
    batch = clip_patch_nce(clip, x, y, corners=corners, patch_size=12, tau=1.0)
    singles = [
        clip_patch_nce(clip, x[i : i + 1], y[i : i + 1], corners=corners, patch_size=12, tau=1.0) for i in range(3)
    ]
    assert batch.item() == pytest.approx(torch.stack(singles).mean().item(), rel=1e-5)


def test_patch_loss_equals_infonce_with_same_image_negatives():
    """A transparent embedder (mean colour) against the formula written out."""

    def embed(images):  # (N, 3, s, s) -> (N, 3), unit norm
        return F.normalize(images.mean((2, 3)) + torch.tensor([0.5, 0.0, -0.5]), dim=-1)

    x, y = _images(2, seed=4), _images(2, seed=5)
    corners = torch.tensor([[0, 0], [4, 20], [10, 2]])
    tau = 0.5
    got = clip_patch_nce(embed, x, y, corners=corners, patch_size=8, tau=tau)
    losses = []
    for b in range(2):
        q = embed(crop_patches(y[b : b + 1], corners, 8)[0])
        k = embed(crop_patches(x[b : b + 1], corners, 8)[0])
        for i in range(3):
            logits = (q[i] @ k.T) / tau
            losses.append(-(logits[i] - torch.logsumexp(logits, 0)))
    assert got.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)


def test_gradient_reaches_the_target_image_only(clip):
    x = _images(2, seed=0).requires_grad_(True)
    y = _images(2, seed=1).requires_grad_(True)
    corners = torch.tensor([[0, 0], [8, 8], [16, 4]])
    loss = clip_patch_nce(clip, x, y, corners=corners, patch_size=16, tau=1.0) + clip_distance(
        clip(x.detach()), clip(y)
    )
    loss.backward()
    assert x.grad is None  # keys (x^p crops) are detached
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
