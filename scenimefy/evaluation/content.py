"""How much of a photo's content a translation keeps: SSIM of the luminance structure.

A translation should change colours and textures but keep the scene: where the horizon, ridges,
trees and lakes are. `luminance_ssim(photo, translated)` compares the two images' luminance
(ITU-R BT.601 luma, 0..255) with the structural similarity index (Wang et al. 2004, "Image quality
assessment: from error visibility to structural similarity"), averaged over the image:

    SSIM(x, y) = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

with local means, variances and covariance taken under an 11 x 11 Gaussian window (sigma 1.5),
C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, over the positions where the whole window fits (the
"valid" region, as in the paper's reference code). 1 is the same structure; about 0 is none of
it. Images of different sizes are compared at the translation's size (the photo resized, bicubic).

Plain numpy (no new dependency); images are (H, W, 3) uint8 or (H, W) luminance arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PIXEL_RANGE = 255.0
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (0..255) -> (H, W) float64 BT.601 luma; (H, W) input is returned as float64."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"luminance expects an (H, W, 3) RGB or (H, W) image, got shape {a.shape}")
    return a @ np.asarray(LUMA_WEIGHTS)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian (size,) the 2-D window is the outer product of."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation of (H, W) `a` with g x g over the positions where the window fits."""
    n = len(g)
    rows = sum(g[i] * a[i : a.shape[0] - n + 1 + i, :] for i in range(n))
    return sum(g[j] * rows[:, j : a.shape[1] - n + 1 + j] for j in range(n))


def ssim_map(x: np.ndarray, y: np.ndarray, *, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Local SSIM of two (H, W) arrays on the 0..255 scale, over the valid region (H-w+1, W-w+1)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim_map expects two (H, W) arrays of one shape, got {x.shape} and {y.shape}")
    if min(x.shape) < window:
        raise ValueError(f"ssim_map needs images of at least {window} x {window} pixels, got {x.shape}")
    g = gaussian_window(window, sigma)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * PIXEL_RANGE) ** 2, (SSIM_K2 * PIXEL_RANGE) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def _resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    a = np.asarray(image)
    if a.shape[:2] == shape:
        return a
    if a.dtype != np.uint8:
        raise ValueError(f"luminance_ssim resizes only uint8 images, got {a.dtype} of shape {a.shape}")
    return np.asarray(Image.fromarray(a).resize((shape[1], shape[0]), Image.BICUBIC))


def luminance_ssim(photo: np.ndarray, translated: np.ndarray) -> float:
    """Mean SSIM of the luminance of `photo` and `translated` (the photo resized to the translation's size)."""
    translated = np.asarray(translated)
    photo = _resized(photo, translated.shape[:2])
    return float(ssim_map(luminance(photo), luminance(translated)).mean())


def mean_luminance_ssim(photos: Sequence[np.ndarray], translated: Sequence[np.ndarray]) -> float:
    """The mean of `luminance_ssim` over matched lists of photos and their translations."""
    if len(photos) != len(translated) or not photos:
        raise ValueError(f"mean_luminance_ssim needs matched, non-empty lists, got {len(photos)} and {len(translated)}")
    return float(np.mean([luminance_ssim(p, t) for p, t in zip(photos, translated)]))
