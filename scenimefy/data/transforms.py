"""Training-time augmentation on uint8 batches (docs/method.md).

Images arrive already bicubic-resized to `load_size` (the preparation step does that once).
Here: a random crop to `crop_size` (jitter only when load_size > crop_size) and a random
horizontal flip. Unpaired images draw their own parameters; the two images of a pseudo pair
share one crop and one flip (the authors' paired loader drew them independently).
"""

from __future__ import annotations

import numpy as np
import torch

from scenimefy.data.images import from_uint8


def random_crop_flip(
    images: list[np.ndarray], *, crop_size: int, flip: bool, generator: torch.Generator
) -> list[torch.Tensor]:
    """Crop and flip each tensor of `images` with ONE draw per batch row, shared across the list.

    images: arrays (B, S, S, 3) uint8 that belong together (one for unpaired data, two for
    pairs). Returns float tensors (B, 3, crop, crop) in [-1, 1].
    """
    batch = [torch.as_tensor(np.ascontiguousarray(a)) for a in images]
    b, s = batch[0].shape[0], batch[0].shape[1]
    if any(t.shape[:3] != batch[0].shape[:3] for t in batch):
        raise ValueError(f"images of a pair differ in shape: {[tuple(t.shape) for t in batch]}")
    if crop_size > s:
        raise ValueError(f"crop_size {crop_size} is larger than the prepared images ({s} px)")
    span = s - crop_size + 1
    tops = torch.randint(span, (b,), generator=generator)
    lefts = torch.randint(span, (b,), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    out = []
    for t in batch:
        rows = []
        for i in range(b):
            top, left = int(tops[i]), int(lefts[i])
            crop = t[i, top : top + crop_size, left : left + crop_size]  # (crop, crop, 3)
            rows.append(crop.flip(1) if flips[i] else crop)
        out.append(from_uint8(torch.stack(rows)))
    return out
