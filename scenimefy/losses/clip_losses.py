"""CLIP-space losses of Stage 1, semantic-constrained fine-tuning (paper Eq. 1 and Eq. 2).

Both compare the pseudo pair ``x^p = G_s(w)`` (source) and ``y^p = G_t(w)`` (target) through a
frozen CLIP image embedder: a callable mapping (N, 3, H, W) images in [-1, 1] to (N, D)
L2-normalised embeddings, with gradients to its input (``scenimefy.priors.loading.ClipEmbedder``,
which resizes any input to CLIP's size itself). No Ray, no file paths.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Embedder = Callable[[Tensor], Tensor]


def clip_distance(emb_a: Tensor, emb_b: Tensor) -> Tensor:
    """Eq. 1, D_CLIP: ``mean_b (1 - cos(e_a[b], e_b[b]))`` for embeddings (B, D).

    The embeddings are re-normalised here, so raw (unnormalised) features work as well.
    """
    if emb_a.shape != emb_b.shape:
        raise ValueError(f"clip_distance: embedding shapes differ, {tuple(emb_a.shape)} vs {tuple(emb_b.shape)}")
    cos = (F.normalize(emb_a.float(), dim=-1) * F.normalize(emb_b.float(), dim=-1)).sum(-1)  # (B,)
    return (1 - cos).mean()


def random_patch_corners(size: int, patch_size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random top-left corners (top, left) of ``patch_size`` crops in a ``size`` image.

    Each coordinate is uniform over every valid position ``0 .. size - patch_size`` (OC draws
    with an exclusive bound and never uses the last one). Returns int64 (count, 2); the same
    corners serve every image of the batch and both images of a pair. Crops may overlap.
    """
    if not 0 < patch_size <= size:
        raise ValueError(f"patch size {patch_size} does not fit {size} px images: set finetune.patch_size to 1..{size}")
    if count < 2:
        raise ValueError(f"L_patch needs at least 2 patches per image (one positive, one negative), got {count}")
    return torch.randint(size - patch_size + 1, (count, 2), generator=generator)


def crop_patches(images: Tensor, corners: Tensor, patch_size: int) -> Tensor:
    """Crop (B, C, H, W) images at ``corners`` (K, 2) -> (B, K, C, s, s), s = ``patch_size``."""
    crops = [images[:, :, top : top + patch_size, left : left + patch_size] for top, left in corners.tolist()]
    return torch.stack(crops, 1)  # (B, K, C, s, s)


def clip_patch_nce(
    embedder: Embedder,
    x_src: Tensor,
    y_tgt: Tensor,
    *,
    corners: Tensor,
    patch_size: int,
    tau: float,
) -> Tensor:
    """Eq. 2, L_patch: InfoNCE between CLIP embeddings of crops at the same positions.

    ``x_src`` = x^p (B, 3, H, W) gives the keys (detached: no gradient reaches G_s nor the
    key crops), ``y_tgt`` = y^p the queries. For image b and crop i, with q_{b,i} the
    embedding of y^p_b's crop i and k_{b,j} of x^p_b's crop j:
    ``l_{b,i} = -log( exp(q_{b,i} k_{b,i} / tau) / sum_j exp(q_{b,i} k_{b,j} / tau) )``, the
    positive at the same position and the negatives the *other crops of the same image* only.
    Returns ``mean_{b,i} l_{b,i}``, i.e. the mean of the per-image losses.
    """
    if x_src.shape != y_tgt.shape:
        raise ValueError(f"clip_patch_nce: image shapes differ, {tuple(x_src.shape)} vs {tuple(y_tgt.shape)}")
    batch, count = x_src.shape[0], corners.shape[0]
    queries = embedder(crop_patches(y_tgt, corners, patch_size).flatten(0, 1))  # (B K, D)
    with torch.no_grad():
        keys = embedder(crop_patches(x_src.detach(), corners, patch_size).flatten(0, 1))  # (B K, D)
    queries = F.normalize(queries.float(), dim=-1).reshape(batch, count, -1)  # (B, K, D)
    keys = F.normalize(keys.float(), dim=-1).reshape(batch, count, -1)  # (B, K, D)
    with torch.autocast(queries.device.type, enabled=False):  # similarities in fp32 even under autocast
        logits = torch.bmm(queries, keys.transpose(1, 2)) / tau  # (B, K, K): row i = query i vs keys j
    targets = torch.arange(count, device=logits.device).repeat(batch)  # positive on the diagonal
    return F.cross_entropy(logits.flatten(0, 1), targets)
