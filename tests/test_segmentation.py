"""Stage 2's selection criterion against hand-computed values, and the scorer on a tiny Mask2Former."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_priors import tiny_mask2former, write_tiny_mask2former

from scenimefy.config import PriorsConfig
from scenimefy.priors.segmentation import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    MASK2FORMER_PIXEL_MEAN,
    MASK2FORMER_PIXEL_STD,
    SemanticScorer,
    class_scores,
    colorize_labels,
    keep_pair,
    label_map,
    pixel_agreement,
    semantic_consistency,
    to_mask2former_pixels,
)

C = 150
LOG_149_E = math.log(149 + math.e)  # logsumexp of a one-hot 150-vector


def one_hot_scores(labels: list[list[int]]) -> torch.Tensor:
    """A (1, 150, H, W) one-hot score tensor of a label map."""
    target = torch.tensor(labels)  # (H, W)
    return torch.nn.functional.one_hot(target, C).permute(2, 0, 1)[None].float()


# ----------------------------------------------------------------------------------------
# Class names and colours


def test_ade20k_classes_are_the_150_in_standard_order():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert ADE20K_CLASSES[-1] == "flag"


def test_palette_has_150_distinct_colours():
    assert ADE20K_PALETTE.shape == (150, 3) and ADE20K_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in ADE20K_PALETTE}) == 150


def test_colorize_labels_gives_distinct_uint8_colours_for_distinct_labels():
    labels = torch.tensor([[0, 1], [2, 149]])
    rgb = colorize_labels(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert len({tuple(px) for px in rgb.reshape(-1, 3)}) == 4
    np.testing.assert_array_equal(rgb[0, 0], ADE20K_PALETTE[0])
    np.testing.assert_array_equal(colorize_labels(labels.numpy()), rgb)


def test_colorize_labels_rejects_ids_outside_the_150_classes():
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 150\)"):
        colorize_labels(np.array([[0, 150]]))


# ----------------------------------------------------------------------------------------
# Preprocessing


def test_to_mask2former_pixels_maps_minus_one_and_one_to_normalised_0_and_255():
    images = torch.cat([torch.full((1, 3, 2, 2), -1.0), torch.full((1, 3, 2, 2), 1.0)])
    pixels = to_mask2former_pixels(images)
    assert pixels.shape == (2, 3, 2, 2) and pixels.dtype == torch.float32
    for k in range(3):
        mean, std = MASK2FORMER_PIXEL_MEAN[k], MASK2FORMER_PIXEL_STD[k]
        torch.testing.assert_close(pixels[0, k], torch.full((2, 2), (0 - mean) / std))
        torch.testing.assert_close(pixels[1, k], torch.full((2, 2), (255 - mean) / std))


def test_to_mask2former_pixels_clamps_out_of_range_values():
    pixels = to_mask2former_pixels(torch.tensor([-1.7, -1.0, 1.0, 1.3]).view(1, 1, 1, 4).expand(1, 3, 1, 4))
    red = pixels[0, 0, 0] * MASK2FORMER_PIXEL_STD[0] + MASK2FORMER_PIXEL_MEAN[0]  # back to v
    torch.testing.assert_close(red, torch.tensor([0.0, 0.0, 255.0, 255.0]), atol=1e-4, rtol=0)


def test_to_mask2former_pixels_rounds_to_integer_levels():
    # (x + 1) * 127.5 = 10.4, 10.6, 100.2, 200.7  ->  10, 11, 100, 201
    levels = torch.tensor([10.4, 10.6, 100.2, 200.7])
    pixels = to_mask2former_pixels((levels / 127.5 - 1).view(1, 1, 1, 4).expand(1, 3, 1, 4))
    green = pixels[0, 1, 0] * MASK2FORMER_PIXEL_STD[1] + MASK2FORMER_PIXEL_MEAN[1]
    torch.testing.assert_close(green, torch.tensor([10.0, 11.0, 100.0, 201.0]), atol=1e-4, rtol=0)


def test_to_mask2former_pixels_rejects_non_rgb_batches():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        to_mask2former_pixels(torch.zeros(3, 8, 8))


# ----------------------------------------------------------------------------------------
# Per-pixel class scores


def test_class_scores_hand_computed_two_queries_three_classes_null_dropped():
    # q0: softmax([0, log2, 0, log4]) = [1, 2, 1, 4] / 8; mask logit 0 -> sigmoid 1/2
    # q1: softmax([log3, 0, 0, 0])    = [3, 1, 1, 1] / 6; mask logit log 3 -> sigmoid 3/4
    class_logits = torch.tensor([[[0.0, math.log(2), 0.0, math.log(4)], [math.log(3), 0.0, 0.0, 0.0]]])
    mask_logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)
    scores = class_scores(class_logits, mask_logits, (2, 2))
    assert scores.shape == (1, 3, 2, 2) and scores.dtype == torch.float32  # null class dropped
    expected = [
        0.5 * 1 / 8 + 0.75 * 3 / 6,  # 0.4375
        0.5 * 2 / 8 + 0.75 * 1 / 6,  # 0.25
        0.5 * 1 / 8 + 0.75 * 1 / 6,  # 0.1875
    ]
    torch.testing.assert_close(scores, torch.tensor(expected).view(1, 3, 1, 1).expand(1, 3, 2, 2))


def test_class_scores_upsample_mask_logits_before_the_sigmoid():
    # One query, all mass on class 0. [-4, 4] -> 4 px bilinear (align_corners=False):
    # [-4, -2, 2, 4], then the sigmoid (not the sigmoid of the ends interpolated).
    class_logits = torch.tensor([[[50.0, -50.0]]])
    mask_logits = torch.tensor([-4.0, 4.0]).view(1, 1, 1, 2)
    scores = class_scores(class_logits, mask_logits, (1, 4))
    expected = torch.sigmoid(torch.tensor([-4.0, -2.0, 2.0, 4.0]))
    torch.testing.assert_close(scores[0, 0, 0], expected)


def test_class_scores_are_float32_for_bf16_outputs():
    scores = class_scores(torch.randn(2, 4, 151, dtype=torch.bfloat16), torch.randn(2, 4, 8, 8).bfloat16(), (16, 16))
    assert scores.shape == (2, 150, 16, 16) and scores.dtype == torch.float32


# ----------------------------------------------------------------------------------------
# The criterion


def test_semantic_consistency_hand_computed_three_of_four_pixels_agree():
    photo = one_hot_scores([[2, 4], [2, 9]])
    anime = one_hot_scores([[2, 4], [2, 0]])
    l_bce, n_classes = semantic_consistency(anime, photo)
    expected = (3 * (LOG_149_E - 1) + 1 * LOG_149_E) / 4
    assert l_bce.shape == (1,) and n_classes.shape == (1,)
    assert l_bce.item() == pytest.approx(expected, abs=1e-5)
    assert n_classes.item() == 3  # {2, 4, 9}
    assert pixel_agreement(anime, photo).item() == pytest.approx(0.75)
    torch.testing.assert_close(label_map(anime), torch.tensor([[[2, 4], [2, 0]]]))


@pytest.mark.parametrize(
    "anime_labels, expected",
    [([[1, 1], [1, 1]], 4.022), ([[2, 2], [2, 2]], 5.022), (None, 5.011)],
    ids=["agree_everywhere", "disagree_everywhere", "all_zero"],
)
def test_semantic_consistency_band_values(anime_labels, expected):
    photo = one_hot_scores([[1, 1], [1, 1]])
    anime = torch.zeros_like(photo) if anime_labels is None else one_hot_scores(anime_labels)
    l_bce, n_classes = semantic_consistency(anime, photo)
    assert round(l_bce.item(), 3) == expected
    assert n_classes.item() == 1


def test_semantic_consistency_of_an_image_with_itself_is_its_score_entropy_term():
    scores = torch.rand(2, C, 3, 4, generator=torch.Generator().manual_seed(0))
    l_bce, _ = semantic_consistency(scores, scores)
    # By hand: mean over pixels of log Σ_c exp(S_c) − S[argmax], S[argmax] = max_c S_c.
    expected = (scores.exp().sum(dim=1).log() - scores.max(dim=1).values).mean(dim=(1, 2))
    torch.testing.assert_close(l_bce, expected)
    assert pixel_agreement(scores, scores).tolist() == [1.0, 1.0]


def test_semantic_consistency_is_per_image_and_counts_each_photos_classes():
    photo = torch.cat([one_hot_scores([[1, 1], [1, 1]]), one_hot_scores([[3, 5], [7, 3]])])
    anime = torch.cat([one_hot_scores([[1, 1], [1, 1]]), one_hot_scores([[0, 0], [0, 0]])])
    l_bce, n_classes = semantic_consistency(anime, photo)
    torch.testing.assert_close(l_bce, torch.tensor([LOG_149_E - 1, LOG_149_E]))
    assert n_classes.tolist() == [1, 3]
    assert n_classes.dtype == torch.int64


def test_semantic_consistency_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        semantic_consistency(torch.zeros(1, C, 2, 2), torch.zeros(1, C, 4, 4))


def test_keep_pair_truth_table():
    l_bce = torch.tensor([4.9, 5.0, 5.1, 4.9, 4.0, 5.5])
    n_classes = torch.tensor([2, 2, 2, 1, 7, 1])
    keep = keep_pair(l_bce, n_classes, threshold=5.0, min_classes=2)
    assert keep.dtype == torch.bool
    assert keep.tolist() == [True, False, False, False, True, False]


# ----------------------------------------------------------------------------------------
# The scorer on a tiny random Mask2Former


@pytest.fixture(scope="module")
def scorer() -> SemanticScorer:
    return SemanticScorer(tiny_mask2former(seed=0))


def test_scorer_outputs_150_class_scores_at_the_input_size(scorer):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    scores = scorer(images)
    assert scores.shape == (2, 150, 32, 32) and scores.dtype == torch.float32
    assert not scores.requires_grad
    assert (scores >= 0).all()


def test_scorer_is_batch_size_independent(scorer):
    # 64 px: at 32 px the tiny Swin's last stage is 1x1, and GroupNorm refuses a single
    # 1x1 image ("more than 1 value per channel"); the real model sees 8x8 there at 256 px.
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batched = scorer(images)
    singles = torch.cat([scorer(images[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-4)


def test_score_pairs_returns_per_pair_tensors(scorer):
    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    animes = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = scorer.score_pairs(photos, animes)
    assert set(out) == {"l_bce", "n_classes", "pixel_agreement", "photo_labels", "anime_labels"}
    for key in ("l_bce", "n_classes", "pixel_agreement"):
        assert out[key].shape == (2,), key
    assert out["photo_labels"].shape == out["anime_labels"].shape == (2, 32, 32)
    assert out["photo_labels"].dtype == torch.int64
    # The batched call equals scoring each set on its own.
    l_bce, n_classes = semantic_consistency(scorer(animes), scorer(photos))
    torch.testing.assert_close(out["l_bce"], l_bce, atol=1e-5, rtol=1e-5)
    assert out["n_classes"].tolist() == n_classes.tolist()


def test_score_pairs_of_identical_images_agree_everywhere(scorer):
    photos = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    out = scorer.score_pairs(photos, photos.clone())
    assert out["pixel_agreement"].tolist() == [1.0, 1.0]
    torch.testing.assert_close(out["photo_labels"], out["anime_labels"])


def test_scorer_stays_frozen_in_eval_mode(scorer):
    scorer.train()
    assert not scorer.training and not scorer.model.training
    assert not any(p.requires_grad for p in scorer.parameters())


def test_scorer_casts_pixels_to_the_model_dtype():
    model = tiny_mask2former(seed=0).to(torch.bfloat16)
    scores = SemanticScorer(model)(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert scores.shape == (2, 150, 32, 32) and scores.dtype == torch.float32


def test_scorer_rejects_a_model_without_150_classes():
    with pytest.raises(ValueError, match="num_labels=150"):
        SemanticScorer(tiny_mask2former(seed=0, num_labels=3))


def test_scorer_from_priors_loads_the_local_checkpoint(tmp_path):
    directory = write_tiny_mask2former(tmp_path / "m2f")
    cfg = PriorsConfig(mask2former=str(directory), cache_dir=str(tmp_path / "cache"), offline=True)
    scorer = SemanticScorer.from_priors(cfg, "cpu", precision="bf16")  # autocast only applies on CUDA
    assert scorer.dtype == torch.float32 and scorer.autocast_dtype == torch.bfloat16
    assert scorer(torch.zeros(2, 3, 32, 32)).shape == (2, 150, 32, 32)
