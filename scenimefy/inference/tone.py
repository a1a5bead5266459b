"""Keep a photo's tone on its translation: overall brightness, contrast and colour cast.

The translator normalises every feature map with instance norm, starting right after its first
convolution, so its output hardly depends on the input's global brightness, contrast or colour
cast: a night photo that is a darker copy of a day layout is translated almost as the day one
(docs/method.md, "What the generator cannot see"). `keep_tone` puts the photo's global tone back
on the translation with one affine colour transform per image, in BT.601 YCbCr:

    Y'  = g (Y - mean_t(Y)) + mean_t(Y) + s (mean_p(Y) - mean_t(Y)),  g = 1 + s (std_p(Y) / std_t(Y) - 1)
    Cb' = Cb + s (mean_p(Cb) - mean_t(Cb)),   Cr' = Cr + s (mean_p(Cr) - mean_t(Cr))

p: the photo, t: the translation, s: the strength in [0, 1] (0: the translation unchanged, 1:
the photo's luma mean and spread and its mean chroma). Local structure and the style's palette
contrasts stay the generator's; only the global statistics move. It is the counterpart of the
colour-preserving post-processing of style transfer (Gatys et al. 2016, "Preserving Color in
Neural Artistic Style Transfer"), which keeps the photo's colours and takes the style's luminance.

Not part of the paper's method: `translate.keep_tone` and `serve.keep_tone` default to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

# RGB -> YCbCr (BT.601, full range, no offsets: the chroma of grey is 0); its rows act on the
# channels of a (3, H, W) image in [-1, 1] as well as in [0, 255], since the luma weights sum to 1
# and the chroma weights to 0.
RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=torch.float64,
)
STD_FLOOR = 1e-3  # a flat translation's luma spread is taken as this (no division by zero)


def check_strength(strength: float) -> None:
    """A ValueError naming `keep_tone` unless 0 <= strength <= 1."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"keep_tone={strength}: expected a strength in [0, 1] (0: off)")


def tone_statistics(image: Tensor) -> tuple[Tensor, Tensor]:
    """(mean of Y, Cb and Cr as a (3,) float64 tensor, standard deviation of Y) of a (3, H, W) image.

    Only one image-sized temporary (the luma plane) is made, so large photos stay cheap."""
    flat = image.reshape(3, -1)
    rgb_mean = flat.mean(dim=1, dtype=torch.float64)
    weights = RGB_TO_YCBCR[0].to(device=image.device, dtype=torch.float32)
    luma = weights @ flat.float()
    return RGB_TO_YCBCR.to(image.device) @ rgb_mean, luma.std(unbiased=False).double()


def tone_transform(photo: Tensor, translated: Tensor, strength: float) -> tuple[Tensor, Tensor]:
    """The (3, 3) matrix A and (3,) offset c, acting on RGB, with `A @ rgb + c` = the module's
    formula applied to `translated` (float64, on the images' device)."""
    check_strength(strength)
    photo_mean, photo_std = tone_statistics(photo)
    own_mean, own_std = tone_statistics(translated)
    gain = 1.0 + strength * (photo_std / own_std.clamp(min=STD_FLOOR) - 1.0)
    ycc = RGB_TO_YCBCR.to(photo.device)
    scale = torch.diag(torch.stack([gain, gain.new_ones(()), gain.new_ones(())]))
    shift = strength * (photo_mean - own_mean)
    # in YCbCr: v' = D (v - own_mean) + own_mean + shift; back in RGB through the inverse matrix
    inverse = torch.linalg.inv(ycc)
    matrix = inverse @ scale @ ycc
    offset = inverse @ ((torch.eye(3, dtype=torch.float64, device=photo.device) - scale) @ own_mean + shift)
    return matrix, offset


def keep_tone(translated: Tensor, photo: Tensor, strength: float) -> Tensor:
    """`translated` (3, H, W) in [-1, 1] with `photo`'s tone at `strength` (module docstring),
    clamped to [-1, 1]. The two need not have the same size (statistics are global) nor be on the
    same device (the result is on `translated`'s); strength 0 returns `translated` itself."""
    if strength == 0.0:
        return translated
    matrix, offset = tone_transform(photo.to(translated.device), translated, strength)
    out = torch.einsum("ij,jhw->ihw", matrix.float(), translated.float()) + offset.float()[:, None, None]
    return out.clamp_(-1.0, 1.0).to(translated.dtype)
