"""Stage 2's segmentation-guided selection: Mask2Former ADE20k scores and the "L_BCE" criterion.

A pseudo pair (x^p, y^p) is kept when the anime image y^p keeps the photo's semantics
(paper Sec. 3.2; docs/method.md):

    S = class_scores(Mask2Former(to_mask2former_pixels(image)))      (B, 150, H, W)
    L_BCE = mean_{h,w} CrossEntropy(S_y^p[:, h, w] as logits, argmax_c S_x^p[:, h, w])
    keep  = L_BCE < threshold (5.0) and |unique(argmax_c S_x^p)| >= min_classes (2)

Despite its name, L_BCE is a multi-class cross-entropy taken on the scores S (values in
about [0, 1]) as if they were logits, so it lives in a narrow band (see
`semantic_consistency`). The exact definition is kept so that the 5.0 threshold and the
paper's tables (4.24-4.76) stay comparable; `pixel_agreement` is the readable metric to log
beside it.

Plain PyTorch: nothing here imports transformers at import time (the model is built by
`scenimefy.priors.loading.load_mask2former`), and there is no Ray or MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenimefy.config import PriorsConfig
from scenimefy.priors.loading import load_mask2former

if TYPE_CHECKING:
    from transformers import Mask2FormerForUniversalSegmentation


# ----------------------------------------------------------------------------------------
# ADE20k-150: class names and colours


# The standard SceneParsing / ADE20k-150 order (Mask2Former, MMSegmentation, Hugging Face).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
NUM_ADE20K_CLASSES = len(ADE20K_CLASSES)  # 150; Mask2Former adds a 151st "no object" class

# The usual ADE20k palette (MMSegmentation's), except class 48 "skyscraper": there it repeats
# class 6 "road" (140, 140, 140); here it is (150, 150, 165) so that every class has its own
# colour in inspection grids.
ADE20K_PALETTE: np.ndarray = np.array(
    [
        [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
        [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
        [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
        [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
        [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
        [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
        [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
        [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
        [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
        [235, 12, 255], [160, 150, 20], [0, 163, 255], [150, 150, 165], [250, 10, 15],
        [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
        [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
        [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
        [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
        [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
        [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
        [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
        [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
        [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
        [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
        [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
        [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
        [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
        [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
        [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
        [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
        [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
        [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
        [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
        [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
    ],
    dtype=np.uint8,
)  # fmt: skip
ADE20K_PALETTE.setflags(write=False)


def colorize_labels(labels: np.ndarray | Tensor) -> np.ndarray:
    """ADE20k palette colours of a label map: (H, W) ints in [0, 150) -> (H, W, 3) uint8.

    Any leading shape works ((B, H, W) -> (B, H, W, 3)); for inspection grids only.
    """
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"colorize_labels expects integer class ids, got dtype {labels.dtype}: pass label_map(scores)")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_ADE20K_CLASSES):
        raise ValueError(
            f"colorize_labels: class ids must lie in [0, {NUM_ADE20K_CLASSES}), got [{labels.min()}, {labels.max()}]"
        )
    return ADE20K_PALETTE[labels]


# ----------------------------------------------------------------------------------------
# Mask2Former input and per-pixel class scores


MASK2FORMER_PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet RGB mean on the 0..255 scale
MASK2FORMER_PIXEL_STD = (58.395, 57.12, 57.375)


def to_mask2former_pixels(images: Tensor) -> Tensor:
    """Generator images (B, 3, H, W) in [-1, 1] -> Mask2Former pixel_values (B, 3, H, W), float32.

    v = round((x + 1) * 127.5) clamped to [0, 255] (the pixels of the saved PNG; the authors
    did not clamp), then (v - mean) / std with the ImageNet statistics on the 0..255 scale.
    No resizing: Mask2Former sees the image at its own resolution, the setting behind the
    5.0 threshold (the authors' ResizeShortestEdge(640) is built but never applied).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"to_mask2former_pixels expects RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
    v = torch.round((images.float() + 1.0) * 127.5).clamp_(0.0, 255.0)
    mean = images.new_tensor(MASK2FORMER_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = images.new_tensor(MASK2FORMER_PIXEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (v - mean) / std


def class_scores(class_queries_logits: Tensor, masks_queries_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-pixel class scores S (B, K, H, W) from Mask2Former's query outputs, in float32.

    S[c, h, w] = Σ_q softmax(class_logits_q)[c] · sigmoid(mask_logits_q↑)[h, w], with the
    mask logits upsampled bilinearly (align_corners=False) to `size` *before* the sigmoid and
    the null class (the last of the K + 1) dropped after the softmax: detectron2's
    `semantic_inference`, not transformers' `post_process_semantic_segmentation` (which
    resizes to 384 first and rescales the scores afterwards).

    class_queries_logits: (B, Q, K + 1); masks_queries_logits: (B, Q, h, w); size: (H, W).
    """
    if class_queries_logits.ndim != 3 or masks_queries_logits.ndim != 4:
        raise ValueError(
            "class_scores expects class_queries_logits (B, Q, K+1) and masks_queries_logits (B, Q, h, w), got "
            f"{tuple(class_queries_logits.shape)} and {tuple(masks_queries_logits.shape)}"
        )
    if class_queries_logits.shape[:2] != masks_queries_logits.shape[:2]:
        raise ValueError(
            f"class_scores: batch/query dims differ: {tuple(class_queries_logits.shape[:2])} vs "
            f"{tuple(masks_queries_logits.shape[:2])}"
        )
    class_probs = class_queries_logits.float().softmax(dim=-1)[..., :-1]  # (B, Q, K), null dropped
    mask_logits = F.interpolate(
        masks_queries_logits.float(), size=tuple(size), mode="bilinear", align_corners=False
    )  # (B, Q, H, W)
    return torch.einsum("bqc,bqhw->bchw", class_probs, mask_logits.sigmoid())


def label_map(scores: Tensor) -> Tensor:
    """argmax_c of scores (B, C, H, W) -> (B, H, W) long (ties: the lowest class id)."""
    if scores.ndim != 4:
        raise ValueError(f"label_map expects scores (B, C, H, W), got shape {tuple(scores.shape)}")
    return scores.argmax(dim=1)


# ----------------------------------------------------------------------------------------
# The selection criterion (paper Sec. 3.2)


def _check_pair(scores_anime: Tensor, scores_photo: Tensor, name: str) -> None:
    if scores_anime.ndim != 4 or scores_anime.shape != scores_photo.shape:
        raise ValueError(
            f"{name} expects two score tensors of the same shape (B, C, H, W), got "
            f"{tuple(scores_anime.shape)} and {tuple(scores_photo.shape)}"
        )


def semantic_consistency(scores_anime: Tensor, scores_photo: Tensor) -> tuple[Tensor, Tensor]:
    """Paper §3.2, the "L_BCE" semantic-consistency criterion, per image: (L_BCE (B,), n_classes (B,)).

    L_BCE = (1 / HW) Σ_{h,w} [ log Σ_c exp(S^a[c,h,w]) − S^a[ŷ(h,w), h, w] ],  ŷ = argmax_c S^p,

    i.e. PyTorch's CrossEntropyLoss (mean over the image's pixels) with the anime scores S^a
    taken as logits and the photo's labels as the target; n_classes = |unique(ŷ)|, the
    photo's "semantic abundance" (long).

    Because the scores are probability-like (about [0, 1]) rather than logits, the value
    lives in a narrow band. With C = 150 classes and one-hot scores:
      - anime agrees everywhere:    log(149 + e) − 1 ≈ 4.022
      - anime disagrees everywhere: log(149 + e)     ≈ 5.022
      - all-zero anime scores:      log 150          ≈ 5.011
    so the 5.0 threshold rejects pairs whose anime image gives, on average, almost no score
    to the photo's class, and differences of 0.1 are large. Computed in float32.
    """
    _check_pair(scores_anime, scores_photo, "semantic_consistency")
    target = label_map(scores_photo)  # (B, H, W)
    per_pixel = F.cross_entropy(scores_anime.float(), target, reduction="none")  # (B, H, W)
    l_bce = per_pixel.mean(dim=(1, 2))
    present = torch.zeros(scores_photo.shape[:2], dtype=torch.bool, device=target.device)  # (B, C)
    present.scatter_(1, target.flatten(1), True)
    return l_bce, present.sum(dim=1)


def pixel_agreement(scores_a: Tensor, scores_b: Tensor) -> Tensor:
    """Fraction of pixels whose argmax classes agree, per image (B,); logged beside L_BCE."""
    _check_pair(scores_a, scores_b, "pixel_agreement")
    return (label_map(scores_a) == label_map(scores_b)).float().mean(dim=(1, 2))


def keep_pair(l_bce: Tensor, n_classes: Tensor, *, threshold: float, min_classes: int) -> Tensor:
    """Selection rule (paper §3.2): L_BCE < threshold and n_classes >= min_classes, per pair (bool).

    The paper keeps L_BCE < 5.0 and "more than one" class, i.e. min_classes = 2.
    """
    return (l_bce < threshold) & (n_classes >= min_classes)


# ----------------------------------------------------------------------------------------
# The frozen scorer


class SemanticScorer(nn.Module):
    """A frozen Mask2FormerForUniversalSegmentation mapping images in [-1, 1] to class scores S.

    The images are moved to the model's device and the pixel values cast to the model's dtype
    (a bf16 model runs in bf16); with autocast_dtype set, the model also runs under
    torch.autocast on CUDA (ignored on CPU). Scores are always float32, at the input size.
    """

    def __init__(self, model: "Mask2FormerForUniversalSegmentation", autocast_dtype: torch.dtype | None = None):
        super().__init__()
        num_labels = model.config.num_labels
        if num_labels != NUM_ADE20K_CLASSES:
            raise ValueError(
                f"SemanticScorer needs an ADE20k-150 Mask2Former (num_labels=150), got num_labels={num_labels}: "
                "use facebook/mask2former-swin-base-ade-semantic"
            )
        self.model = model.eval().requires_grad_(False)
        self.autocast_dtype = autocast_dtype

    @classmethod
    def from_priors(cls, cfg: PriorsConfig, device: str | torch.device, *, precision: str) -> "SemanticScorer":
        """Load cfg.mask2former in fp32; precision "bf16" runs it under bf16 autocast on CUDA.

        Autocast rather than bf16 weights: it keeps softmax and normalisation in float32, and
        on a tiny random model it moved L_BCE by ~2e-4 against ~4e-3 for bf16 weights (H100).
        On CPU the model always runs in fp32.
        """
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"SemanticScorer precision={precision!r}: expected 'fp32' or 'bf16'")
        autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        return cls(load_mask2former(cfg, device=device), autocast_dtype=autocast_dtype)

    def train(self, mode: bool = True) -> "SemanticScorer":
        # A frozen evaluator: a parent's .train() must not switch Mask2Former's dropout on.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) in [-1, 1] -> scores S (B, 150, H, W), float32, on the model's device."""
        device = self.device
        pixels = to_mask2former_pixels(images.to(device)).to(self.dtype)
        amp = self.autocast_dtype is not None and device.type == "cuda"
        with torch.autocast(device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=amp):
            out = self.model(pixel_values=pixels)
        return class_scores(out.class_queries_logits, out.masks_queries_logits, images.shape[-2:])

    @torch.no_grad()
    def score_pairs(self, photos: Tensor, animes: Tensor) -> dict[str, Tensor]:
        """Score pseudo pairs (x^p, y^p) in one batched Mask2Former call; per-pair tensors.

        photos, animes: (B, 3, H, W) in [-1, 1]. Returns l_bce (B,) float32, n_classes (B,)
        long, pixel_agreement (B,) float32, photo_labels and anime_labels (B, H, W) long.
        """
        if photos.shape != animes.shape:
            raise ValueError(
                f"score_pairs expects photos and animes of the same shape, got {tuple(photos.shape)} and "
                f"{tuple(animes.shape)}"
            )
        scores = self(torch.cat([photos, animes.to(photos.device)]))  # (2B, 150, H, W)
        scores_photo, scores_anime = scores.chunk(2)
        l_bce, n_classes = semantic_consistency(scores_anime, scores_photo)
        photo_labels, anime_labels = label_map(scores_photo), label_map(scores_anime)
        return {
            "l_bce": l_bce,
            "n_classes": n_classes,
            "pixel_agreement": (photo_labels == anime_labels).float().mean(dim=(1, 2)),
            "photo_labels": photo_labels,
            "anime_labels": anime_labels,
        }
