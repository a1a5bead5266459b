"""Stage 2 inspection: a grid of kept and rejected pairs with their label maps, and the score histogram."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scenimefy.data.images import atomic_path, image_grid
from scenimefy.priors.segmentation import colorize_labels

GRID_MIN_SIDE = 96  # inspection grids enlarge smaller images to this many pixels


def load_candidate_rows(manifest, root: str | os.PathLike, seeds: Iterable[int]) -> list[dict[str, Any]]:
    """Rows with their images read back from root/candidates (for the inspection grid)."""
    from PIL import Image

    by_seed = manifest.set_index("seed")
    rows = []
    for seed in seeds:
        r = by_seed.loc[int(seed)]
        read = lambda rel: np.asarray(Image.open(Path(root) / rel))  # noqa: E731
        rows.append(
            {
                "seed": int(seed),
                "l_bce": float(r["l_bce"]),
                "n_classes": int(r["n_classes"]),
                "pixel_agreement": float(r["pixel_agreement"]),
                "kept": bool(r["kept"]),
                "photo": read(r["photo_path"]),
                "anime": read(r["anime_path"]),
                "photo_labels": read(r["photo_labels_path"]),
                "anime_labels": read(r["anime_labels_path"]),
            }
        )
    return rows


def inspection_grid(rows: Sequence[dict[str, Any]], n_kept: int, n_rejected: int) -> np.ndarray:
    """Kept then rejected pairs, one per grid row: x^p | its labels | y^p | its labels.

    `rows`: dicts with seed, l_bce, n_classes, kept and the uint8 images photo, anime (H, W, 3)
    and label maps photo_labels, anime_labels (H, W). The first `n_kept` kept and `n_rejected`
    rejected rows are shown; each row is labelled with its verdict, seed, L_BCE and class count.
    Images smaller than GRID_MIN_SIDE are enlarged (nearest) so the labels fit. Returns an
    (H', W', 3) uint8 image.
    """
    kept = [r for r in rows if r["kept"]][:n_kept]
    rejected = [r for r in rows if not r["kept"]][:n_rejected]
    chosen = kept + rejected
    if not chosen:
        raise ValueError("inspection_grid: no rows to show")
    scale = max(1, math.ceil(GRID_MIN_SIDE / np.asarray(chosen[0]["photo"]).shape[0]))  # small images: nearest upscale
    up = lambda a: np.repeat(np.repeat(np.asarray(a), scale, axis=0), scale, axis=1)  # noqa: E731
    cells = [
        [up(r["photo"]), up(colorize_labels(np.asarray(r["photo_labels"]).astype(np.int64))),
         up(r["anime"]), up(colorize_labels(np.asarray(r["anime_labels"]).astype(np.int64)))]
        for r in chosen
    ]  # fmt: skip
    labels = [
        f"{'kept' if r['kept'] else 'rejected'} {r['seed']}\nL_BCE {r['l_bce']:.3f}\n{r['n_classes']} classes"
        for r in chosen
    ]
    return image_grid(cells, row_labels=labels, col_labels=["x^p", "x^p labels", "y^p", "y^p labels"])


def plot_score_histogram(manifest, *, threshold: float, path: str | os.PathLike) -> str:
    """L_BCE histogram of kept and rejected candidates with the threshold, and the class-count
    histogram, as a PNG (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    l_bce = manifest["l_bce"].to_numpy(np.float64)
    kept = manifest["kept"].to_numpy(bool)
    bins = np.linspace(min(l_bce.min(), threshold) - 1e-3, max(l_bce.max(), threshold) + 1e-3, 41) if l_bce.size else 10
    ax1.hist(
        [l_bce[kept], l_bce[~kept]], bins=bins, stacked=True, label=["kept", "rejected"], color=["tab:green", "tab:red"]
    )
    ax1.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax1.set_xlabel("L_BCE (semantic-consistency cross-entropy)")
    ax1.set_ylabel("candidates")
    ax1.set_title(f"keep rate {kept.mean() if kept.size else 0:.1%} of {kept.size}")
    ax1.legend(fontsize=8)
    n = manifest["n_classes"].to_numpy(np.int64)
    if n.size:
        ax2.hist(n, bins=np.arange(0.5, n.max() + 1.5, 1.0), color="tab:blue")
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_xlabel("ADE20k classes in x^p")
    ax2.set_ylabel("candidates")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return str(path)
