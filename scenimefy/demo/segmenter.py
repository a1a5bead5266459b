"""The demo's Mask2Former: the tiny Mask2FormerForUniversalSegmentation of `scenimefy.demo.priors`,
trained for half a minute on the procedural scenes' label maps, so that stage 2's selection has
something to select with.

A random Mask2Former scores every pair at about ln(150) and labels almost every image with one
class, so the paper's rule cannot tell pairs apart. This one labels the demo's scenes (photos and
anime alike) with the ADE20k classes a real Mask2Former would give them (`SCENE_TO_ADE20K`: sky,
mountain, water, grass, hill, tree) at about 80 % pixel accuracy, in the same 150-class output
space, so stage 2 scores it exactly as it scores the real one.

Training: a Mask2Former-style mask-classification loss with a fixed matching (query k predicts
class `SEGMENTER_CLASSES[k]` and its mask); a class absent from an image is its query's "no object"
target. With six classes the Hungarian matching of the original adds nothing but cost, and
transformers' own loss needs scipy for it.

The selection threshold: the paper's 5.0 belongs to the Swin-L Mask2Former on real photos. A tiny
CPU model is less confident, so its L_BCE lives in a band of its own: on matching procedural
photo/anime pairs about 4.2, on pairs of two unrelated scenes about 4.4 (`calibrate_threshold`
measures both at the pairs' size). The demo keeps a pseudo pair when its halves agree better than
two unrelated scenes typically do: L_BCE below the shuffled pairs' median.

    record = write_scene_segmenter(root / "mask2former", size=32)   # trains, saves, calibrates
    record["threshold"], record["pixel_accuracy"]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scenimefy.demo import scenes
from scenimefy.priors.segmentation import (
    ADE20K_CLASSES,
    NUM_ADE20K_CLASSES,
    class_scores,
    semantic_consistency,
    to_mask2former_pixels,
)

# The ADE20k class a real Mask2Former gives each procedural region.
SCENE_TO_ADE20K = {
    scenes.SKY: "sky",
    scenes.SUN: "sky",
    scenes.CLOUD: "sky",  # ADE20k labels clouds as sky
    scenes.RIDGE0: "mountain",
    scenes.RIDGE0 + 1: "mountain",
    scenes.RIDGE0 + 2: "mountain",
    scenes.WATER: "water",
    scenes.FIELD: "grass",
    scenes.HILL: "hill",
    scenes.TREE: "tree",
    scenes.TRUNK: "tree",
}
LABEL_TO_ADE20K = np.array([ADE20K_CLASSES.index(SCENE_TO_ADE20K[i]) for i in range(scenes.NUM_LABELS)], np.int64)
SEGMENTER_CLASSES = tuple(sorted(set(LABEL_TO_ADE20K.tolist())))  # query k predicts SEGMENTER_CLASSES[k]
NO_OBJECT = NUM_ADE20K_CLASSES  # Mask2Former's extra class

RECORD = "scene_segmenter.json"  # beside the model: how it was trained and its calibration
RENDER_SIZE = 64  # scenes are drawn at this size, then resized to the training size
MASK_WEIGHT = 5.0  # the mask term's weight against the class term (Mask2Former uses 5 for its mask BCE)


def scene_batch(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n procedural scenes, each drawn as a photo or as anime (even odds): images (n, 3, size, size)
    in [-1, 1] and their ADE20k label maps (n, size, size)."""
    images, labels = [], []
    for _ in range(n):
        p = scenes.sample_scene(rng)
        render = scenes.render_photo if rng.random() < 0.5 else scenes.render_anime
        images.append(_as_input(render(p, RENDER_SIZE), size))
        labels.append(_labels_at(scenes.scene_labels(p, RENDER_SIZE), size))
    return torch.stack(images), torch.stack(labels)


def _as_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> (3, size, size) in [-1, 1], resized with antialiasing."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0
    if x.shape[-1] != size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x


def _labels_at(labels: np.ndarray, size: int) -> torch.Tensor:
    """Procedural labels (H, W) -> ADE20k ids (size, size), nearest."""
    ade = torch.from_numpy(LABEL_TO_ADE20K[labels])
    if ade.shape[-1] != size:
        ade = F.interpolate(ade[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return ade


def segmenter_scores(model, images: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores S (B, 150, H, W) of images in [-1, 1], as stage 2 computes them."""
    out = model(pixel_values=to_mask2former_pixels(images))
    return class_scores(out.class_queries_logits, out.masks_queries_logits, images.shape[-2:])


def mask_classification_loss(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class term, mask term) of the fixed-matching Mask2Former loss.

    class_logits (B, Q, 151) with Q = len(SEGMENTER_CLASSES); mask_logits (B, Q, h, w), upsampled
    bilinearly to the labels' size; labels (B, H, W) ADE20k ids. Query k's class target is
    SEGMENTER_CLASSES[k] where that class is in the image, NO_OBJECT where it is not (cross-entropy
    over all B*Q queries); its mask target is the class's binary mask (BCE with logits, per-pixel
    mean, averaged over the queries whose class is present).
    """
    classes = torch.tensor(SEGMENTER_CLASSES, device=labels.device)
    if class_logits.shape[1] != len(classes) or mask_logits.shape[1] != len(classes):
        raise ValueError(f"mask_classification_loss expects {len(classes)} queries, got {class_logits.shape[1]}")
    masks = (labels[:, None] == classes[None, :, None, None]).float()  # (B, Q, H, W)
    present = masks.flatten(2).amax(dim=2) > 0  # (B, Q)
    named = classes[None].expand_as(present)
    class_target = torch.where(present, named, torch.full_like(named, NO_OBJECT))
    class_term = F.cross_entropy(class_logits.flatten(0, 1).float(), class_target.flatten())
    logits = F.interpolate(mask_logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    per_query = F.binary_cross_entropy_with_logits(logits, masks, reduction="none").mean(dim=(2, 3))
    mask_term = (per_query * present).sum() / present.sum().clamp(min=1)
    return class_term, mask_term


def train_scene_segmenter(
    *, size: int, steps: int = 300, batch_size: int = 8, lr: float = 2e-3, seed: int = 0, pool: int = 512
):
    """The tiny Mask2Former (`scenimefy.demo.priors.tiny_mask2former`, one query per class of
    SEGMENTER_CLASSES) trained on `pool` procedural scenes at `size` px; eval mode."""
    from scenimefy.demo.priors import tiny_mask2former

    torch.manual_seed(seed)
    model = tiny_mask2former(seed, num_queries=len(SEGMENTER_CLASSES)).train()
    images, labels = scene_batch(np.random.default_rng([seed, 1]), pool, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(pool, (batch_size,), generator=order)
        out = model(pixel_values=to_mask2former_pixels(images[pick]))
        class_term, mask_term = mask_classification_loss(
            out.class_queries_logits, out.masks_queries_logits, labels[pick]
        )
        optimizer.zero_grad(set_to_none=True)
        (class_term + MASK_WEIGHT * mask_term).backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def pixel_accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of pixels whose argmax class is the label."""
    return float((segmenter_scores(model, images).argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def calibrate_threshold(model, *, size: int, n: int = 64, seed: int = 7) -> dict[str, float]:
    """L_BCE of n matching procedural pairs (a scene's photo and its anime rendering) and of the same
    pairs shuffled (scene i's photo with scene i+1's anime), at `size` px; the demo's threshold is the
    shuffled pairs' median. Also the pixel accuracy on the 2n held-out images."""
    rng = np.random.default_rng([seed, 2])
    photos, animes, labels = [], [], []
    for _ in range(n):
        p = scenes.sample_scene(rng)
        photos.append(_as_input(scenes.render_photo(p, RENDER_SIZE), size))
        animes.append(_as_input(scenes.render_anime(p, RENDER_SIZE), size))
        labels.append(_labels_at(scenes.scene_labels(p, RENDER_SIZE), size))
    photos, animes, labels = torch.stack(photos), torch.stack(animes), torch.stack(labels)
    s_photo, s_anime = segmenter_scores(model, photos), segmenter_scores(model, animes)
    matching, _ = semantic_consistency(s_anime, s_photo)
    shuffled, _ = semantic_consistency(s_anime.roll(1, dims=0), s_photo)
    accuracy = (torch.cat([s_photo, s_anime]).argmax(dim=1) == torch.cat([labels, labels])).float().mean()
    return {
        "matching_median": float(matching.median()),
        "shuffled_median": float(shuffled.median()),
        "threshold": float(shuffled.median()),
        "pixel_accuracy": float(accuracy),
    }


def write_scene_segmenter(directory: Path, *, size: int, steps: int = 300, seed: int = 0) -> dict:
    """Train (`train_scene_segmenter`), calibrate and save_pretrained the demo's Mask2Former into
    directory (config.json + model.safetensors, what `priors.mask2former` loads) with RECORD beside
    it; the record (path, threshold, medians, pixel accuracy, training settings). A directory that
    holds a record for the same settings is reused."""
    from scenimefy.data.images import atomic_path

    directory = Path(directory)
    settings = {"size": size, "steps": steps, "seed": seed}
    record_path = directory / RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings:
            return record
    model = train_scene_segmenter(size=size, steps=steps, seed=seed)
    calibration = calibrate_threshold(model, size=size)
    model.save_pretrained(directory)
    record = {"path": str(directory), "settings": settings, **calibration}
    with atomic_path(record_path) as tmp:  # written last: the model is complete
        Path(tmp).write_text(json.dumps(record, indent=1))
    return record
