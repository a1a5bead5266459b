"""Procedural demo data: one landscape grammar, two renderers ("photo" and "anime").

`scenimefy demo` must run on a fresh machine with no data, so it trains on scenes drawn
here. `sample_scene` draws a layout (horizon, sky, sun or moon, up to three mountain ridges,
water or grass, trees, clouds); `render_photo` draws it with smooth gradients, fractal
textures, haze, blur and sensor noise in muted colours, `render_anime` draws the *same*
layout flat and cel-shaded: posterised tones, a saturated palette, hard-edged clouds, dark
outlines around regions and sparkles on water. Both share `scene_labels`, so a photo and
an anime rendering of one `SceneParams` are a pixel-aligned pair.

Everything is vectorised numpy; coordinates are fractions of the image (x right, y down),
so a scene looks the same at every size. Colours are floats in [0, 1] until the end.
"""

from __future__ import annotations

import colorsys
import functools
import json
import os
from dataclasses import dataclass

import numpy as np

from scenimefy.data.images import atomic_path, save_image_atomic

Colour = tuple[float, float, float]

# ----------------------------------------------------------------------------------------
# Scene grammar


@dataclass(frozen=True)
class Ridge:
    """One mountain ridge standing on the horizon."""

    height: float  # highest peak above the horizon, fraction of the image height
    roughness: float  # fractal persistence of the ridge line: 0.3 smooth .. 0.75 jagged
    colour: Colour  # base colour before lighting and haze
    seed: int  # shape of the ridge line


@dataclass(frozen=True)
class Tree:
    x: float  # trunk position, fraction of the width
    base: float  # where it stands, fraction of the height (below the horizon)
    height: float  # total height, fraction of the image
    width: float  # crown width, fraction of the image
    kind: str  # "conifer" or "round"
    colour: Colour


@dataclass(frozen=True)
class Cloud:
    x: float  # centre
    y: float
    width: float  # extent, fractions of the image
    height: float
    seed: int  # arrangement of the puffs


@dataclass(frozen=True)
class SceneParams:
    """Everything both renderers need; renderer-specific randomness derives from `seed`."""

    horizon: float  # y of the horizon, fraction of the height from the top
    time_of_day: str  # "day", "golden", "dusk" or "night"
    sky_top: Colour
    sky_horizon: Colour
    light: Colour  # colour of the sun light on lit faces
    sun_x: float
    sun_y: float
    sun_radius: float
    sun_visible: bool  # the moon at night
    ridges: tuple[Ridge, ...]  # far to near
    foreground: str  # "water" or "grass"
    ground_colour: Colour  # grass (fields, hills, shore)
    water_colour: Colour
    shore: float  # water scenes: height of a grass shore at the bottom (0: none)
    hill: float  # grass scenes: depth below the horizon where a nearer hill starts
    trees: tuple[Tree, ...]  # far to near
    clouds: tuple[Cloud, ...]
    seed: int  # textures, ripples, stars, sensor noise


TIMES_OF_DAY = ("day", "golden", "dusk", "night")
_TIME_PROBS = (0.55, 0.2, 0.15, 0.1)
# (sky top, sky at the horizon, light) in muted, realistic colours.
_SKY = {
    "day": ((0.30, 0.48, 0.74), (0.72, 0.79, 0.86), (1.00, 0.98, 0.94)),
    "golden": ((0.34, 0.42, 0.62), (0.92, 0.74, 0.54), (1.00, 0.84, 0.64)),
    "dusk": ((0.17, 0.19, 0.38), (0.84, 0.48, 0.40), (0.95, 0.62, 0.52)),
    "night": ((0.02, 0.03, 0.08), (0.10, 0.12, 0.21), (0.55, 0.60, 0.75)),
}
_AMBIENT = {"day": 1.0, "golden": 0.85, "dusk": 0.65, "night": 0.4}


def _jitter(rng: np.random.Generator, c: Colour, amount: float = 0.05) -> Colour:
    return tuple(float(v) for v in np.clip(np.asarray(c) * (1 + rng.normal(0, amount, 3)), 0, 1))


def sample_scene(rng: np.random.Generator) -> SceneParams:
    """Draw one landscape layout."""
    time_of_day = str(rng.choice(TIMES_OF_DAY, p=_TIME_PROBS))
    top, hor, light = (_jitter(rng, c) for c in _SKY[time_of_day])
    horizon = float(rng.uniform(0.45, 0.68))

    # Sun (moon at night): high by day, low at golden hour and dusk.
    sun_x = float(rng.uniform(0.12, 0.88))
    if time_of_day in ("golden", "dusk"):
        sun_y = float(horizon - rng.uniform(0.04, 0.2))
    else:
        sun_y = float(rng.uniform(0.08, max(0.1, horizon - 0.2)))
    sun_radius = float(rng.uniform(0.03, 0.055))
    sun_visible = bool(rng.random() < 0.7)

    # Mountains: far ridges are taller and bluer, near ones lower and greener or rockier.
    n_ridges = int(rng.choice(4, p=(0.15, 0.3, 0.3, 0.25)))
    ridges = []
    for i in range(n_ridges):
        far = (n_ridges - i) / max(n_ridges, 1)  # 1 for the farthest
        height = float(rng.uniform(0.10, 0.18) + 0.17 * far * rng.uniform(0.5, 1.0))
        height = min(height, horizon - 0.06)
        base = [(0.36, 0.42, 0.48), (0.28, 0.36, 0.24), (0.40, 0.36, 0.31)][
            0 if far > 0.9 and n_ridges > 1 else int(rng.integers(1, 3))
        ]
        ridges.append(Ridge(height, float(rng.uniform(0.35, 0.7)), _jitter(rng, base, 0.08), int(rng.integers(2**31))))

    foreground = "water" if rng.random() < 0.45 else "grass"
    ground = _jitter(rng, [(0.32, 0.44, 0.19), (0.42, 0.46, 0.22), (0.26, 0.38, 0.17)][int(rng.integers(3))])
    water = _jitter(rng, (0.10, 0.22, 0.28))
    shore = float(rng.uniform(0.06, 0.16)) if foreground == "water" and rng.random() < 0.55 else 0.0
    hill = float(rng.uniform(0.08, 0.25) * (1 - horizon)) if foreground == "grass" else 0.0

    # Trees stand where there is ground: anywhere on grass, on the shore, or on the far bank.
    trees = []
    for _ in range(int(rng.integers(0, 8))):
        if foreground == "grass":
            base = float(rng.uniform(horizon + 0.01, 1.02))
        elif shore > 0 and rng.random() < 0.7:
            base = float(rng.uniform(1.0 - shore * 0.6, 1.04))
        else:
            base = horizon + 0.003
        near = (base - horizon) / (1 - horizon)
        height = float((0.04 + 0.45 * near) * rng.uniform(0.7, 1.3))
        kind = "conifer" if rng.random() < 0.6 else "round"
        width = height * float(rng.uniform(0.3, 0.45) if kind == "conifer" else rng.uniform(0.55, 0.8))
        colour = _jitter(rng, (0.12, 0.22, 0.10) if kind == "conifer" else (0.20, 0.30, 0.12), 0.1)
        trees.append(Tree(float(rng.uniform(-0.05, 1.05)), base, height, width, kind, colour))
    trees.sort(key=lambda t: t.base)

    clouds = []
    n_clouds = int(rng.choice(6, p=(0.15, 0.2, 0.25, 0.2, 0.12, 0.08)))
    for _ in range(n_clouds):
        w = float(rng.uniform(0.15, 0.42))
        clouds.append(
            Cloud(
                float(rng.uniform(-0.05, 1.05)),
                float(rng.uniform(0.06, horizon - 0.08)),
                w,
                float(w * rng.uniform(0.25, 0.45)),
                int(rng.integers(2**31)),
            )
        )

    return SceneParams(
        horizon=horizon,
        time_of_day=time_of_day,
        sky_top=top,
        sky_horizon=hor,
        light=light,
        sun_x=sun_x,
        sun_y=sun_y,
        sun_radius=sun_radius,
        sun_visible=sun_visible,
        ridges=tuple(ridges),
        foreground=foreground,
        ground_colour=ground,
        water_colour=water,
        shore=shore,
        hill=hill,
        trees=tuple(trees),
        clouds=tuple(clouds),
        seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------------
# Noise primitives (resolution independent: sampled at fractional coordinates)


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _lattice_coords(coords: np.ndarray, freq: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell index and smoothstep weight of each coordinate (flattened)."""
    pos = coords.reshape(-1).astype(np.float32) * np.float32(freq)  # >= 0, <= n - 2
    i = np.minimum(pos.astype(np.int64), n - 2)
    return i, _smooth(pos - i)


def _value_noise(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """Smooth value noise in [0, 1] at xs (1, W) x ys (H, 1), fx x fy lattice cells.

    The interpolation is separable: interpolate lattice rows along y first (H, nx), then
    along x (H, W); two cheap gathers instead of four over the whole image.
    """
    nx, ny = int(np.ceil(fx)) + 2, int(np.ceil(fy)) + 2
    g = rng.random((ny, nx), dtype=np.float32)
    iy, ty = _lattice_coords(ys, fy, ny)
    ix, tx = _lattice_coords(xs, fx, nx)
    rows = g[iy] * (1 - ty)[:, None] + g[iy + 1] * ty[:, None]  # (H, nx)
    return rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx  # (H, W)


def _fbm(
    rng: np.random.Generator,
    xs: np.ndarray,
    ys: np.ndarray,
    freq: float,
    octaves: int = 4,
    persistence: float = 0.5,
    aspect: float = 1.0,
) -> np.ndarray:
    """Fractal noise, roughly zero-mean in [-1, 1]; aspect > 1 stretches features along x."""
    total, amp, norm = 0.0, 1.0, 0.0
    nyquist = max(xs.size, ys.size) / 2  # finer octaves would only alias
    for o in range(octaves):
        f = freq * 2**o
        if o > 0 and f > nyquist:
            break
        total = total + amp * (_value_noise(rng, xs, ys, f / aspect, f) - 0.5)
        norm += amp
        amp *= persistence
    return (2.0 / norm) * total


def _ridge_line(seed: int, xs: np.ndarray, roughness: float) -> np.ndarray:
    """A ridge profile in [0, 1] along xs (1, W): a few big peaks plus fractal detail."""
    rng = np.random.default_rng(seed)
    zero = np.zeros((1, 1), np.float32)
    n = _fbm(rng, xs, zero, freq=float(rng.uniform(1.5, 3.0)), octaves=6, persistence=roughness)[0]
    n = (n - n.min()) / max(float(n.max() - n.min()), 1e-6)
    return n  # (W,)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with edge padding (shifted sums, no loops over pixels)."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = img.shape[:2]
    p = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * p[i : i + h] for i in range(2 * r + 1))
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i : i + w] for i in range(2 * r + 1))


def _rng(p: SceneParams, tag: int) -> np.random.Generator:
    return np.random.default_rng([p.seed, tag])


# ----------------------------------------------------------------------------------------
# Shared layout: region labels and the geometric fields both renderers shade with

SKY, SUN, CLOUD, RIDGE0, WATER, FIELD, HILL, TREE, TRUNK = 0, 1, 2, 3, 6, 7, 8, 9, 10
NUM_LABELS = 11  # RIDGE0 + 0..2 are the three ridges, far to near


@dataclass
class _Layout:
    labels: np.ndarray  # (H, W) int
    xs: np.ndarray  # (1, W) pixel centres in [0, 1]
    ys: np.ndarray  # (H, 1)
    cloud: np.ndarray  # (H, W) cloud density in [0, 1]; > 0.5 is cloud
    cloud_low: np.ndarray  # (H, W) how far down inside its cloud a pixel is, about [-1, 1]
    ridge_shade: np.ndarray  # (H, W) mountain face orientation towards the sun, [-1, 1]
    ridge_depth: np.ndarray  # (H, W) distance below the ridge line, fraction of the height
    tree_side: np.ndarray  # (H, W) x offset from the tree axis towards the sun, [-1, 1]
    tree_id: np.ndarray  # (H, W) index into p.trees of the crown covering a pixel, -1 if none
    sun_dist: np.ndarray  # (H, W) distance to the sun centre, fraction of the image


def _cloud_field(p: SceneParams, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = (ys.shape[0], xs.shape[1])
    density = np.zeros(shape, np.float32)
    low = np.zeros(shape, np.float32)
    for c in p.clouds:
        rng = np.random.default_rng(c.seed)
        # A cumulus is a flat-bottomed row of puffs, bigger in the middle.
        n = int(rng.integers(3, 7))
        px = c.x + (np.linspace(-0.5, 0.5, n) + rng.normal(0, 0.06, n)) * c.width * 0.75
        pr = c.height * (0.55 + 0.45 * np.cos(np.linspace(-1.2, 1.2, n))) * rng.uniform(0.7, 1.1, n)
        blob = np.zeros(shape, np.float32)
        for x0, r in zip(px, pr):
            d2 = ((xs - x0) / (r * 1.15)) ** 2 + ((ys - (c.y + c.height * 0.5 - r)) / r) ** 2
            blob = np.maximum(blob, np.exp(-1.6 * d2).astype(np.float32))
        blob = blob * (ys <= c.y + c.height * 0.55)  # flat base
        blob = blob + 0.18 * _fbm(rng, xs, ys, freq=1.0 / max(c.height, 0.02), octaves=3) * (blob > 0.2)
        take = blob > density
        density = np.where(take, blob, density)
        low = np.where(take, np.broadcast_to((ys - c.y) / max(c.height * 0.5, 1e-3), shape), low)
    return np.clip(density, 0, 1), low


def scene_labels(p: SceneParams, size: int) -> np.ndarray:
    """The (size, size) region label map both renderers fill (SKY, SUN, CLOUD, ridges, ...)."""
    return _layout(p, size).labels.copy()


@functools.lru_cache(maxsize=4)  # a pair renders one layout twice; arrays are read-only
def _layout(p: SceneParams, size: int) -> _Layout:
    xs = ((np.arange(size, dtype=np.float32) + 0.5) / size)[None, :]  # (1, W)
    ys = ((np.arange(size, dtype=np.float32) + 0.5) / size)[:, None]  # (H, 1)
    shape = (size, size)
    labels = np.full(shape, SKY, np.int64)

    sun_dist = np.sqrt((xs - p.sun_x) ** 2 + (ys - p.sun_y) ** 2).astype(np.float32)
    if p.sun_visible:
        labels[(sun_dist < p.sun_radius) & (ys < p.horizon)] = SUN
    cloud, cloud_low = _cloud_field(p, xs, ys)
    labels[(cloud > 0.5) & (ys < p.horizon)] = CLOUD

    # Ridges, far to near, each standing on the horizon.
    ridge_shade = np.zeros(shape, np.float32)
    ridge_depth = np.zeros(shape, np.float32)
    sun_side = 1.0 if p.sun_x < 0.5 else -1.0  # light comes from the left when the sun is left
    for i, r in enumerate(p.ridges[:3]):
        prof = _ridge_line(r.seed, xs, r.roughness)  # (W,)
        top = p.horizon - r.height * (0.3 + 0.7 * prof)  # (W,)
        inside = (ys >= top[None, :]) & (ys < p.horizon)
        labels[inside] = RIDGE0 + i
        # Faces: the slope of the (smoothed, so faces are broad) ridge line, displaced sideways
        # with depth so the light and shadow sides run down the flanks like gullies.
        smooth_top = _blur(top[None, :, None], max(1.0, size / 48))[0, :, 0]
        slope = np.gradient(smooth_top) * size  # d(top)/dx in image fractions
        depth = np.clip(ys - top[None, :], 0, None)
        shift = (
            _fbm(np.random.default_rng(r.seed + 1), xs, ys, 4.0, 2) * 0.03 + depth * 0.5 * np.sign(xs - 0.5)
        ).astype(np.float32)
        idx = np.clip(np.rint((xs + shift) * size - 0.5), 0, size - 1).astype(np.int64)
        face = np.tanh(-3.0 * slope[idx] * sun_side)  # climbing towards the sun: lit
        ridge_shade = np.where(inside, face, ridge_shade)
        ridge_depth = np.where(inside, depth / max(r.height, 1e-3), ridge_depth)

    # Ground: water or grass below the horizon, with a shore or a nearer hill.
    ground = np.broadcast_to(ys >= p.horizon, shape)
    labels[ground] = WATER if p.foreground == "water" else FIELD
    line = _ridge_line(p.seed + 7, xs, 0.4)  # (W,) a gentle undulating edge
    if p.foreground == "water" and p.shore > 0:
        labels[ground & (ys >= 1.0 - p.shore * (0.6 + 0.4 * line[None, :]))] = HILL
    if p.foreground == "grass" and p.hill > 0:
        hill_top = p.horizon + p.hill * (0.5 + 1.0 * line[None, :])
        labels[ground & (ys >= hill_top)] = HILL

    # Trees, far to near.
    tree_side = np.zeros(shape, np.float32)
    tree_id = np.full(shape, -1, np.int64)
    for k, t in enumerate(p.trees):
        crown_top = t.base - t.height
        trunk_h = t.height * (0.12 if t.kind == "conifer" else 0.3)
        crown_bot = t.base - trunk_h
        u = (xs - t.x) / (t.width * 0.5)  # (1, W) -1..1 across the crown
        if t.kind == "conifer":
            v = np.clip((ys - crown_top) / max(crown_bot - crown_top, 1e-4), 0, None)  # 0 tip .. 1 bottom
            tiers = (v * 3.0) % 1.0  # three stacked tiers, each widening downwards
            half = np.clip(v, 0, 1) * (0.55 + 0.45 * tiers)
            crown = (ys >= crown_top) & (ys <= crown_bot) & (np.abs(u) <= half)
        else:
            cy = crown_top + (crown_bot - crown_top) * 0.5
            ry = (crown_bot - crown_top) * 0.55
            d = u**2 + ((ys - cy) / ry) ** 2
            crown = d <= 1.0
        trunk = (ys > crown_bot - trunk_h * 0.3) & (ys <= t.base) & (np.abs(xs - t.x) <= t.width * 0.07)
        labels[trunk] = TRUNK
        labels[crown] = TREE
        tree_side = np.where(crown, np.clip(-u * sun_side, -1, 1), tree_side)
        tree_id[crown] = k
    out = _Layout(labels, xs, ys, cloud, cloud_low, ridge_shade, ridge_depth, tree_side, tree_id, sun_dist)
    for a in vars(out).values():
        a.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------
# Colour helpers


def _c(c) -> np.ndarray:
    return np.asarray(c, np.float32)


def _mix(a, b, t):
    return a * (1 - t) + b * t


def _vivid(c, sat: float = 1.6, val: float = 1.15, hue_to: float | None = None, hue_amount: float = 0.0) -> np.ndarray:
    """A muted colour made anime-vivid: more saturation and brightness, optional hue pull."""
    h, s, v = colorsys.rgb_to_hsv(*[float(x) for x in c])
    if hue_to is not None:
        dh = ((hue_to - h + 0.5) % 1.0) - 0.5
        h = (h + hue_amount * dh) % 1.0
    return _c(colorsys.hsv_to_rgb(h, min(1.0, s * sat + 0.08), min(1.0, v * val + 0.04)))


def _put(img: np.ndarray, mask: np.ndarray, colour) -> None:
    img[mask] = colour if np.ndim(colour) == 1 else colour[mask]


def _reflect(upper: np.ndarray, p: SceneParams, xs_shift: np.ndarray | None = None) -> np.ndarray:
    """Mirror the image above the horizon into the rows below it (optionally rippled in x)."""
    size = upper.shape[0]
    hr = int(round(p.horizon * size))
    rows = np.arange(size)
    src_r = np.clip(2 * hr - rows - 1, 0, size - 1)[:, None]  # (H, 1)
    cols = np.arange(size)[None, :]
    if xs_shift is not None:
        cols = np.clip(cols + xs_shift, 0, size - 1).astype(np.int64)
    return upper[src_r, cols]


# ----------------------------------------------------------------------------------------
# Photo renderer


def render_photo(p: SceneParams, size: int) -> np.ndarray:
    """The "photo" domain: smooth gradients, fractal textures, haze, blur and sensor noise."""
    L = _layout(p, size)
    lab, xs, ys = L.labels, L.xs, L.ys
    shape = (size, size)
    amb = _AMBIENT[p.time_of_day]
    light = _c(p.light)
    top, hor = _c(p.sky_top), _c(p.sky_horizon)
    img = np.zeros(shape + (3,), np.float32)

    # Sky: smooth vertical gradient, a glow around the sun, faint texture.
    t = np.clip(ys / max(p.horizon, 1e-3), 0, 1)[..., None] ** 0.8  # (H, 1, 1)
    sky = _mix(top, hor, t) + 0.015 * _fbm(_rng(p, 1), xs, ys, 3.0, 3)[..., None]
    glow = np.exp(-L.sun_dist / (p.sun_radius * (3.0 if p.time_of_day != "day" else 2.0)))[..., None]
    sky = sky + (0.5 if p.sun_visible else 0.15) * glow * light
    sky = np.broadcast_to(sky, shape + (3,))
    img[:] = sky
    sun_col = _mix(light, _c((1, 1, 1)), 0.6) if p.time_of_day != "night" else _c((0.85, 0.87, 0.8))
    if p.sun_visible:  # soft-edged disc
        a = np.clip((p.sun_radius - L.sun_dist) * size / 1.5 + 0.5, 0, 1)[..., None]
        img = _mix(img, sun_col, a * (ys < p.horizon)[..., None])
    if p.time_of_day == "night":
        stars = (_rng(p, 2).random(shape) > 0.997) & (lab == SKY)
        img[stars] += 0.25

    # Clouds: soft alpha, shaded darker towards their base.
    cloud_col = _mix(_c((0.93, 0.93, 0.95)), light, 0.3) * (0.4 + 0.6 * amb)
    shade = np.clip(0.5 + 0.5 * L.cloud_low, 0, 1)[..., None]
    tex = 0.05 * _fbm(_rng(p, 3), xs, ys, 12.0, 3)[..., None]
    cc = cloud_col * (1.0 - 0.28 * shade) + tex
    ca = np.clip((L.cloud - 0.35) / 0.3, 0, 1)[..., None] * (ys < p.horizon)[..., None] * 0.92
    img = _mix(img, cc, ca)

    # Mountains: fractal rock texture, light on sun-facing flanks, haze with distance.
    n = len(p.ridges)
    for i, r in enumerate(p.ridges[:3]):
        m = lab == RIDGE0 + i
        if not m.any():
            continue
        tex = _fbm(_rng(p, 10 + i), xs, ys, 10.0, 5, 0.55)
        base = _c(r.colour) * amb
        lit = 1.0 + 0.22 * L.ridge_shade + 0.18 * tex - 0.2 * np.clip(L.ridge_depth, 0, 1)
        col = base[None, None] * lit[..., None] * _mix(_c((1, 1, 1)), light, 0.4)
        haze = 0.4 * (n - i) / n  # far ridges are hazier
        haze = haze + 0.15 * np.clip((ys - (p.horizon - 0.04)) / 0.04, 0, 1)  # mist at the foot
        col = _mix(col, hor * (0.7 + 0.3 * amb), np.clip(haze, 0, 0.85)[..., None])
        _put(img, m, col)

    # Ground.
    grass_tex = _fbm(_rng(p, 20), xs, ys, 14.0, 5, 0.6)
    grass_patch = _fbm(_rng(p, 21), xs, ys, 4.0, 2)
    depth = np.clip((ys - p.horizon) / max(1 - p.horizon, 1e-3), 0, 1)  # 0 at horizon .. 1 bottom
    for lbl, gain in ((FIELD, 1.0), (HILL, 0.85)):
        m = lab == lbl
        if m.any():
            g = _c(p.ground_colour) * amb * gain
            col = g[None, None] * (0.9 + 0.3 * grass_tex + 0.15 * grass_patch - 0.25 * depth)[..., None]
            col = _mix(col, hor * (0.7 + 0.3 * amb), (0.35 * (1 - depth) ** 6)[..., None])
            _put(img, m, col)

    # Water: rippled reflection of everything above, tinted and darkened.
    m = lab == WATER
    if m.any():
        ripple = _fbm(_rng(p, 30), xs, ys, 16.0, 3, aspect=6.0)  # long horizontal ripples
        shift = np.rint(ripple * size * 0.03 * (0.3 + depth)).astype(np.int64)
        refl = _reflect(img.copy(), p, shift)
        col = _mix(refl * 0.8, _c(p.water_colour) * (0.5 + 0.5 * amb), (0.35 + 0.3 * depth)[..., None])
        col = col + 0.05 * ripple[..., None]
        _put(img, m, col)

    # Trees and trunks: dark textured foliage.
    leaf_tex = _fbm(_rng(p, 40), xs, ys, 24.0, 3)
    m = lab == TREE
    if m.any():
        palette = np.stack([_c(t.colour) for t in p.trees])  # (n_trees, 3)
        col = palette[L.tree_id[m]] * amb * (0.9 + 0.25 * leaf_tex[m] + 0.2 * L.tree_side[m])[:, None]
        img[m] = col
    _put(img, lab == TRUNK, _c((0.22, 0.16, 0.11)) * amb)

    # Camera: slight blur, a little desaturation, vignette, exposure, sensor noise.
    img = _blur(img, max(0.4, 0.5 * size / 128))
    lum = img.mean(axis=2, keepdims=True)
    img = _mix(img, lum, 0.12)
    vig = 1.0 - 0.18 * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2)[..., None] * 2
    rng = _rng(p, 50)
    img = img * vig * float(rng.uniform(0.92, 1.06))
    img = img + rng.normal(0, 0.014, shape + (1,)).astype(np.float32)  # luminance noise
    img = img + rng.normal(0, 0.008, shape + (3,)).astype(np.float32)  # chroma noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Anime renderer


def _bands(v: np.ndarray, levels: int) -> np.ndarray:
    """Quantise v in [0, 1] to `levels` integer bands."""
    return np.clip((v * levels).astype(np.int64), 0, levels - 1)


def _tones(base: np.ndarray, shadow_tint=(0.16, 0.2, 0.5)) -> np.ndarray:
    """Three cel tones of a vivid base colour: bluish shadow, base, highlight. (3, 3)"""
    shadow = _mix(base * 0.62, _c(shadow_tint), 0.22)
    light = np.clip(_mix(base * 1.12, _c((1, 1, 0.92)), 0.12), 0, 1)
    return np.stack([shadow, base, light])


def _thicken(mask: np.ndarray) -> np.ndarray:
    """Grow a (H, W) mask by one pixel down and right (no wrap-around)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:, 1:] |= mask[:, :-1]
    return out


def _evening(c: np.ndarray, p: SceneParams) -> np.ndarray:
    """Warm and dim a vivid colour at golden hour and dusk (night is handled separately)."""
    if p.time_of_day not in ("golden", "dusk"):
        return c
    amb = _AMBIENT[p.time_of_day]
    return np.clip(c * (0.45 + 0.55 * amb) * _mix(_c((1, 1, 1)), _vivid(p.light, 1.2, 1.0), 0.45), 0, 1)


def render_anime(p: SceneParams, size: int) -> np.ndarray:
    """The "anime" domain: the same layout flat and cel-shaded, vivid, outlined, noise-free."""
    L = _layout(p, size)
    lab, xs, ys = L.labels, L.xs, L.ys
    shape = (size, size)
    night = p.time_of_day == "night"
    img = np.zeros(shape + (3,), np.float32)

    # Sky: deep saturated blue (or vivid dusk) in hard horizontal bands, slightly wavy.
    top = _vivid(p.sky_top, 1.7, 1.2, hue_to=0.6, hue_amount=0.5)
    hor = _vivid(p.sky_horizon, 1.5, 1.15)
    wave = 0.04 * _fbm(_rng(p, 101), xs, ys, 3.0, 2)
    t = np.clip(ys / max(p.horizon, 1e-3) + wave, 0, 1) ** 0.9
    band = _bands(t, 4).astype(np.float32) / 3.0
    img[:] = _mix(top, hor, band[..., None])
    if p.sun_visible:  # hard-edged halo ring, then a flat disc
        halo = (L.sun_dist < p.sun_radius * 1.9) & (ys < p.horizon)
        img[halo] = _mix(img[halo], _c((1, 1, 0.9)), 0.35)
        img[lab == SUN] = _c((1.0, 0.98, 0.86)) if not night else _c((0.98, 0.98, 0.85))
    if night or p.time_of_day == "dusk":
        stars = (_rng(p, 102).random(shape) > (0.994 if night else 0.998)) & (lab == SKY)
        img[stars] = _c((1, 1, 0.95))

    # Clouds: bright cumulus, white tops, a flat blue-violet shadow band underneath.
    m = lab == CLOUD
    if m.any():
        warm = {
            "day": (1.0, 1.0, 1.0),
            "golden": (1.0, 0.92, 0.78),
            "dusk": (1.0, 0.72, 0.62),
            "night": (0.55, 0.6, 0.78),
        }[p.time_of_day]
        lit = _c(warm)
        shadow = _mix(lit * 0.78, _c((0.45, 0.5, 0.85)), 0.35)
        edge = _fbm(_rng(p, 103), xs, ys, 20.0, 2) * 0.25
        lower = (L.cloud_low + edge) > 0.35
        inner = (L.cloud > 0.8) & ~lower
        col = np.where(lower[..., None], shadow, lit)
        col = np.where(inner[..., None], np.clip(lit * 1.05, 0, 1), col)
        _put(img, m, col)

    # Mountains: three flat tones by face orientation, far ridges bluer (aerial perspective).
    n = len(p.ridges)
    for i, r in enumerate(p.ridges[:3]):
        m = lab == RIDGE0 + i
        if not m.any():
            continue
        far = (n - i) / n
        base = _mix(_evening(_vivid(r.colour, 1.5, 1.1), p), hor * 0.9 + top * 0.1, 0.45 * far)
        if night:
            base = base * 0.35 + _c((0.02, 0.04, 0.12))
        tones = _tones(base)
        lvl = np.where(L.ridge_shade > 0.25, 2, np.where(L.ridge_shade < -0.25, 0, 1))
        lvl = np.where(L.ridge_depth > 0.75, np.minimum(lvl, 1), lvl)
        _put(img, m, tones[lvl])

    # Ground: vivid greens in two or three tones by large patches and distance.
    green = _evening(_vivid(p.ground_colour, 1.7, 1.35, hue_to=0.3, hue_amount=0.4), p)
    if night:
        green = green * 0.35 + _c((0.0, 0.03, 0.1))
    depth = np.clip((ys - p.horizon) / max(1 - p.horizon, 1e-3), 0, 1)
    patches = _fbm(_rng(p, 110), xs, ys, 4.0, 2)
    for lbl, gain in ((FIELD, 1.0), (HILL, 0.82)):
        m = lab == lbl
        if m.any():
            tones = _tones(green * gain, (0.05, 0.25, 0.35))
            # Sunlit patches on a base tone, a shadow band along the bottom edge.
            lvl = np.where(patches > 0.2, 2, 1)
            lvl = np.where(depth + 0.08 * patches > 0.82, 0, lvl)
            _put(img, m, tones[lvl])

    # Water: a flat reflection of the sky and mountains, deep-blue tinted, light streaks, sparkles.
    m = lab == WATER
    if m.any():
        refl = _reflect(img.copy(), p)
        deep = _vivid(p.water_colour, 1.8, 2.2, hue_to=0.58, hue_amount=0.6)
        if night:
            deep = deep * 0.4
        col = _mix(refl, deep, (0.35 + 0.25 * (depth > 0.5))[..., None])
        streak = _fbm(_rng(p, 120), xs, ys, 10.0, 2, aspect=8.0)
        col = np.where((streak > 0.25)[..., None], np.clip(_mix(col, _c((0.9, 0.97, 1.0)), 0.3), 0, 1), col)
        _put(img, m, col)
        srng = _rng(p, 121)
        near_sun = np.exp(-np.abs(xs - p.sun_x) * 6.0) if p.sun_visible else 0.3
        sparkle = m & (srng.random(shape) < 0.02 * near_sun) & (streak > 0.0)
        if size >= 96:  # a little cross at larger sizes
            sparkle = _thicken(sparkle)
        img[sparkle & m] = _c((1.0, 1.0, 0.96))

    # Trees: two tones (sun side lighter), dark trunks.
    m = lab == TREE
    if m.any():
        palette = np.stack([_vivid(t.colour, 1.6, 1.4, hue_to=0.33, hue_amount=0.3) for t in p.trees])
        palette = palette * 0.4 if night else _evening(palette, p)
        base = palette[L.tree_id[m]]  # (n_pixels, 3)
        lit = (L.tree_side[m] > 0.15)[:, None]
        img[m] = np.where(lit, np.clip(base * 1.35 + 0.03, 0, 1), base * 0.8)
    _put(img, lab == TRUNK, _c((0.30, 0.17, 0.10)) * (0.4 if night else 1.0))

    # Outlines: darken pixels on a region boundary (softer between sky, sun and clouds).
    edge = np.zeros(shape, bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    if size >= 192:  # keep outlines visible at large sizes
        edge = _thicken(edge)
    skyish = lab <= CLOUD
    strength = np.where(skyish, 0.82, 0.35)[..., None]
    img = np.where(edge[..., None], img * strength + _c((0.02, 0.02, 0.08)) * (1 - strength), img)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Demo dataset on disk

DEMO_DATA_VERSION = 1  # bump when a renderer changes, so stale demo sets are regenerated
_MARKER = ".demo_complete.json"
_GROUPS = {"photos": 1, "anime": 2, "pairs": 3, "test": 4}  # independent random streams


def _scene(seed: int, group: str, index: int) -> SceneParams:
    """Scene `index` of `group`: depends only on (seed, group, index), not on the counts."""
    return sample_scene(np.random.default_rng([seed, _GROUPS[group], index]))


def _write_set(seed: int, group: str, n: int, size: int, targets: list[tuple[str, object]]) -> None:
    """Render scenes 0..n-1 of `group` with each (folder, renderer) in `targets`, same names."""
    for folder, _ in targets:
        os.makedirs(folder, exist_ok=True)
    for i in range(n):
        scene = _scene(seed, group, i)
        for folder, render in targets:
            save_image_atomic(os.path.join(folder, f"{i:06d}.png"), render(scene, size))
    # Drop numbered images left over from an earlier, larger set.
    for folder, _ in targets:
        for name in os.listdir(folder):
            stem, ext = os.path.splitext(name)
            if ext == ".png" and stem.isdigit() and len(stem) == 6 and int(stem) >= n:
                os.remove(os.path.join(folder, name))


def write_demo_dataset(
    root: str, *, n_photos: int, n_anime: int, n_pairs: int, n_test: int, size: int, seed: int
) -> dict[str, str]:
    """Write a procedural photo / anime / pseudo-pair / test set under `root`; return its folders.

    Layout: `photos/` (photo renderer), `anime/` (anime renderer, independent scenes),
    `pairs/trainA/` + `pairs/trainB/` (photo and anime renderings of the same scenes, same
    file names `000000.png`, ...), `test/` (held-out photos). Deterministic for a seed. A
    marker file written last records the arguments; a complete set with the same arguments
    is not regenerated. Keys: root, photos, anime, pairs, pairs_a, pairs_b, test.
    """
    for key, v in dict(n_photos=n_photos, n_anime=n_anime, n_pairs=n_pairs, n_test=n_test).items():
        if v < 0:
            raise ValueError(f"write_demo_dataset: {key} must be >= 0, got {v}")
    if size < 16:
        raise ValueError(f"write_demo_dataset: size must be >= 16, got {size}")
    root = os.path.abspath(os.fspath(root))
    paths = {
        "root": root,
        "photos": os.path.join(root, "photos"),
        "anime": os.path.join(root, "anime"),
        "pairs": os.path.join(root, "pairs"),
        "pairs_a": os.path.join(root, "pairs", "trainA"),
        "pairs_b": os.path.join(root, "pairs", "trainB"),
        "test": os.path.join(root, "test"),
    }
    spec = dict(
        n_photos=n_photos,
        n_anime=n_anime,
        n_pairs=n_pairs,
        n_test=n_test,
        size=size,
        seed=seed,
        version=DEMO_DATA_VERSION,
    )
    marker = os.path.join(root, _MARKER)
    counts = {"photos": n_photos, "anime": n_anime, "pairs_a": n_pairs, "pairs_b": n_pairs, "test": n_test}
    if os.path.exists(marker):
        try:
            with open(marker) as f:
                done = json.load(f).get("spec") == spec
        except (OSError, ValueError):
            done = False
        if done and all(
            all(os.path.exists(os.path.join(paths[k], f"{i:06d}.png")) for i in range(n)) for k, n in counts.items()
        ):
            return paths
        os.remove(marker)

    _write_set(seed, "photos", n_photos, size, [(paths["photos"], render_photo)])
    _write_set(seed, "anime", n_anime, size, [(paths["anime"], render_anime)])
    _write_set(seed, "pairs", n_pairs, size, [(paths["pairs_a"], render_photo), (paths["pairs_b"], render_anime)])
    _write_set(seed, "test", n_test, size, [(paths["test"], render_photo)])
    with atomic_path(marker) as tmp, open(tmp, "w") as f:  # written last: the set is complete
        json.dump({"spec": spec}, f, indent=1)
    return paths
