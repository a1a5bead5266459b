"""The demo's Mask2Former, taught the procedural scenes' regions so that stage 2's selection selects.

A random Mask2Former spreads its scores over the 150 ADE20k classes almost evenly, so every
candidate pair scores L_BCE ~ ln 150 and nearly every photo gets one label: the paper's rule
(L_BCE < 5.0 and at least 2 classes, paper Sec. 3.2) would keep none, or with a loosened rule
all, and selection would show nothing. The demo's scenes know their own region maps
(`scenimefy.demo.scenes.scene_labels`), so the demo trains the same tiny model (the real
`Mask2FormerForUniversalSegmentation` class, saved with `save_pretrained` and loaded by stage 2
like any Mask2Former) for a few hundred steps on photo and anime renderings of those scenes, with
each region mapped to its ADE20k class (`DEMO_ADE20K`). It then segments sky, mountains, water,
grass and trees in both styles, and stage 2's rule keeps the pairs whose anime image keeps the
photo's regions and drops the others.

The training objective acts on the scores stage 2 reads (`class_scores`): per pixel,
-log S[c*] for the region's class c* plus the score mass on every other class, pushing S toward
the region's one-hot vector. CPU, tens of seconds at 32 px.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from scenimefy.demo import scenes

# Procedural region -> ADE20k-150 class id (scenimefy.priors.segmentation.ADE20K_CLASSES).
ADE_SKY, ADE_TREE, ADE_GRASS, ADE_MOUNTAIN, ADE_WATER = 2, 4, 9, 16, 21
DEMO_ADE20K = {
    scenes.SKY: ADE_SKY,
    scenes.SUN: ADE_SKY,
    scenes.CLOUD: ADE_SKY,
    scenes.RIDGE0: ADE_MOUNTAIN,
    scenes.RIDGE0 + 1: ADE_MOUNTAIN,
    scenes.RIDGE0 + 2: ADE_MOUNTAIN,
    scenes.WATER: ADE_WATER,
    scenes.FIELD: ADE_GRASS,
    scenes.HILL: ADE_GRASS,
    scenes.TREE: ADE_TREE,
    scenes.TRUNK: ADE_TREE,
}
SEGMENTER_QUERIES = 8  # one query per class the scenes have, and room to spare
SEGMENTER_GROUP = "segmenter"  # the scenes it learns from: a random stream of their own


def ade_labels(region_labels: np.ndarray) -> np.ndarray:
    """A scene's (H, W) region map as ADE20k class ids."""
    table = np.zeros(scenes.NUM_LABELS, np.int64)
    for region, ade in DEMO_ADE20K.items():
        table[region] = ade
    return table[region_labels]


def segmenter_training_set(n_scenes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Photo and anime renderings of `n_scenes` scenes: images (2n, 3, size, size) in [-1, 1] and
    their ADE20k label maps (2n, size, size)."""
    images, labels = [], []
    for i in range(n_scenes):
        p = scenes.sample_scene(np.random.default_rng([seed, 99, i]))
        target = ade_labels(scenes.scene_labels(p, size))
        for render in (scenes.render_photo, scenes.render_anime):
            images.append(np.asarray(render(p, size)))
            labels.append(target)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, torch.from_numpy(np.stack(labels))


def region_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of -log S[c*] + sum_{c != c*} S[c] (scores (B, C, H, W), labels (B, H, W))."""
    right = scores.gather(1, labels[:, None]).squeeze(1)
    return (-torch.log(right.clamp_min(1e-4)) + (scores.sum(1) - right)).mean()


def train_demo_segmenter(
    directory: Path,
    *,
    size: int = 32,
    n_scenes: int = 96,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Train a tiny Mask2Former (`scenimefy.demo.priors.tiny_mask2former`) on the demo's scenes and
    save it to `directory` (config.json + model.safetensors). Returns the final loss, the pixel
    accuracy on the training renderings and the seconds it took."""
    from scenimefy.demo.priors import tiny_mask2former
    from scenimefy.priors.segmentation import class_scores, to_mask2former_pixels

    began = time.perf_counter()
    torch.manual_seed(seed)
    model = tiny_mask2former(seed, num_queries=SEGMENTER_QUERIES).train()
    images, labels = segmenter_training_set(n_scenes, size, seed)
    pixels = to_mask2former_pixels(images)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(steps):
        batch = torch.randint(len(pixels), (batch_size,), generator=generator)
        out = model(pixel_values=pixels[batch])
        scores = class_scores(out.class_queries_logits, out.masks_queries_logits, (size, size))
        loss = region_loss(scores, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(pixel_values=pixels)
        predicted = class_scores(out.class_queries_logits, out.masks_queries_logits, (size, size)).argmax(1)
    accuracy = float((predicted == labels).float().mean())
    model.save_pretrained(directory)
    return {"loss": loss.item(), "pixel_accuracy": accuracy, "seconds": time.perf_counter() - began}
