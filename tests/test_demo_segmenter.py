"""The demo's Mask2Former (scenimefy.demo.segmenter): its loss on hand-computed cases, and a short
training run that really learns to label procedural scenes, saved where stage 2 loads it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scenimefy.config import PriorsConfig
from scenimefy.demo import scenes
from scenimefy.demo.segmenter import (
    LABEL_TO_ADE20K,
    NO_OBJECT,
    RECORD,
    SEGMENTER_CLASSES,
    calibrate_threshold,
    mask_classification_loss,
    pixel_accuracy,
    scene_batch,
    write_scene_segmenter,
)
from scenimefy.priors.segmentation import ADE20K_CLASSES, SemanticScorer

SIZE = 32
STEPS = 120  # enough to beat a constant "sky everywhere" prediction by a wide margin


def test_every_procedural_region_gets_the_ade20k_class_a_real_segmenter_would_give_it():
    names = [ADE20K_CLASSES[i] for i in LABEL_TO_ADE20K]
    assert len(names) == scenes.NUM_LABELS
    assert names[scenes.SKY] == names[scenes.CLOUD] == names[scenes.SUN] == "sky"
    assert names[scenes.RIDGE0] == "mountain" and names[scenes.TREE] == names[scenes.TRUNK] == "tree"
    assert names[scenes.WATER] == "water" and names[scenes.FIELD] == "grass" and names[scenes.HILL] == "hill"
    assert [ADE20K_CLASSES[c] for c in SEGMENTER_CLASSES] == ["sky", "tree", "grass", "mountain", "water", "hill"]


def _labels_with_two_classes() -> torch.Tensor:
    """One 2x2 image: sky on the top row, tree on the bottom row."""
    sky, tree = ADE20K_CLASSES.index("sky"), ADE20K_CLASSES.index("tree")
    return torch.tensor([[[sky, sky], [tree, tree]]])


def test_uninformed_outputs_cost_ln151_per_query_and_ln2_per_mask_pixel():
    q = len(SEGMENTER_CLASSES)
    class_term, mask_term = mask_classification_loss(
        torch.zeros(1, q, 151), torch.zeros(1, q, 2, 2), _labels_with_two_classes()
    )
    assert class_term.item() == pytest.approx(math.log(151), abs=1e-6)
    assert mask_term.item() == pytest.approx(math.log(2), abs=1e-6)


def test_confident_right_outputs_cost_nothing_and_absent_classes_must_say_no_object():
    q = len(SEGMENTER_CLASSES)
    labels = _labels_with_two_classes()
    class_logits = torch.full((1, q, 151), -30.0)
    masks = torch.full((1, q, 2, 2), -30.0)
    for k, c in enumerate(SEGMENTER_CLASSES):
        present = bool((labels == c).any())
        class_logits[0, k, c if present else NO_OBJECT] = 30.0
        masks[0, k] = torch.where(labels[0] == c, 30.0, -30.0)
    class_term, mask_term = mask_classification_loss(class_logits, masks, labels)
    assert class_term.item() < 1e-6 and mask_term.item() < 1e-6

    # An absent class's query that claims its class costs 60 nats (a logit gap of 60), averaged over
    # the q queries.
    k_water = SEGMENTER_CLASSES.index(ADE20K_CLASSES.index("water"))
    wrong = class_logits.clone()
    wrong[0, k_water, NO_OBJECT], wrong[0, k_water, SEGMENTER_CLASSES[k_water]] = -30.0, 30.0
    class_term, mask_term = mask_classification_loss(wrong, masks, labels)
    assert class_term.item() == pytest.approx(60.0 / q, rel=1e-4)
    # Masks of absent classes are not scored: a wrong water mask costs nothing.
    masks[0, k_water] = 30.0
    assert mask_classification_loss(class_logits, masks, labels)[1].item() < 1e-6


def test_the_loss_refuses_a_model_with_another_number_of_queries():
    with pytest.raises(ValueError, match="expects 6 queries"):
        mask_classification_loss(torch.zeros(1, 4, 151), torch.zeros(1, 4, 2, 2), _labels_with_two_classes())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segmenter")
    return directory, write_scene_segmenter(directory, size=SIZE, steps=STEPS)


def test_a_short_training_labels_held_out_scenes_far_better_than_a_constant(trained):
    directory, record = trained
    scorer = SemanticScorer.from_priors(PriorsConfig(mask2former=str(directory), offline=True), "cpu", precision="fp32")
    images, labels = scene_batch(np.random.default_rng(12345), 32, SIZE)
    constant = max(float((labels == c).float().mean()) for c in SEGMENTER_CLASSES)  # the best one-class guess
    accuracy = pixel_accuracy(scorer.model, images, labels)
    assert accuracy > constant + 0.15, (accuracy, constant)
    assert record["pixel_accuracy"] > constant + 0.15


def test_matching_pairs_agree_better_than_unrelated_scenes_and_the_threshold_sits_between(trained):
    directory, record = trained
    assert record["matching_median"] < record["threshold"] == record["shuffled_median"]
    # The same numbers from the saved model as from the one in memory at the end of training.
    scorer = SemanticScorer.from_priors(PriorsConfig(mask2former=str(directory), offline=True), "cpu", precision="fp32")
    again = calibrate_threshold(scorer.model, size=SIZE)
    for key in ("matching_median", "shuffled_median", "pixel_accuracy"):
        assert again[key] == pytest.approx(record[key], abs=1e-5)


def test_a_second_call_with_the_same_settings_reuses_the_model_and_other_settings_retrain(trained, tmp_path):
    directory, record = trained
    weights = directory / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert write_scene_segmenter(directory, size=SIZE, steps=STEPS) == record
    assert weights.stat().st_mtime_ns == before
    assert json.loads((directory / RECORD).read_text()) == record

    other = write_scene_segmenter(tmp_path / "other", size=SIZE, steps=2, seed=1)
    assert other["settings"] == {"size": SIZE, "steps": 2, "seed": 1}
    assert (tmp_path / "other" / "model.safetensors").is_file()
