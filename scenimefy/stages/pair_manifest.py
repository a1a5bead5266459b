"""Stage 2 on disk: candidate files, the manifest, and the selection exported for the translator.

Layout (`root` = the stage-2 folder):

    candidates/photo/<seed:08d>.png          x^p of every candidate
    candidates/anime/<seed:08d>.png          y^p
    candidates/photo_labels/<seed:08d>.png   argmax_c S_x^p as uint8 class ids (ADE20k order)
    candidates/anime_labels/<seed:08d>.png   argmax_c S_y^p
    manifest.parquet                         one row per candidate (MANIFEST_COLUMNS)
    selected/trainA/<seed:08d>.png           kept x^p  } the translator's `data.pairs` layout,
    selected/trainB/<seed:08d>.png           kept y^p  } matched by file name

A new threshold is a filter over the manifest (`materialize_selection`): nothing is
regenerated or resegmented. No Ray, no MLflow here; pandas and pyarrow load on first use.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenimefy.data.images import atomic_path, check_replaceable, save_image_atomic
from scenimefy.priors.segmentation import keep_pair

MANIFEST_FILE = "manifest.parquet"
SELECTED_DIR = "selected"
CANDIDATE_DIRS = ("photo", "anime", "photo_labels", "anime_labels")
MANIFEST_COLUMNS = (
    "seed",  # int64: the row's seed (z and noise)
    "l_bce",  # float32: semantic-consistency cross-entropy ("L_BCE" in the paper, Sec. 3.2)
    "n_classes",  # int64: distinct ADE20k classes in the photo's label map
    "pixel_agreement",  # float32: fraction of pixels whose photo and anime labels agree
    "kept",  # bool: keep rule at the threshold of the run that wrote the manifest
    "photo_path",  # str: paths relative to the manifest's folder
    "anime_path",
    "photo_labels_path",
    "anime_labels_path",
)
PATH_COLUMNS = ("photo_path", "anime_path", "photo_labels_path", "anime_labels_path")
SELECTION_FILE = "selection.json"  # written into every exported selection: marks the folder as ours


# ----------------------------------------------------------------------------------------
# Candidates on disk and the manifest


def candidate_relpaths(seed: int) -> dict[str, str]:
    name = f"{int(seed):08d}.png"
    return {f"{kind}_path": f"candidates/{kind}/{name}" for kind in CANDIDATE_DIRS}


def disk_full_error(error: OSError, where: str | os.PathLike) -> ValueError:
    free = _free_bytes(where)
    return ValueError(
        f"no space left on the device holding {where} ({free / 2**20:.0f} MiB free): free some space or set "
        "run.output_dir to another disk; complete files are kept and a rerun resumes"
    )


def write_candidates(batch: dict[str, np.ndarray], *, root: str) -> dict[str, np.ndarray]:
    """Write each row's photo, anime and label maps as PNGs under root/candidates (atomically);
    return the manifest columns (no images). A Ray Data task UDF."""
    seeds = np.asarray(batch["seed"], dtype=np.int64)
    paths: dict[str, list[str]] = {f"{kind}_path": [] for kind in CANDIDATE_DIRS}
    try:
        for i, seed in enumerate(seeds):
            rel = candidate_relpaths(int(seed))
            for kind in CANDIDATE_DIRS:
                save_image_atomic(os.path.join(root, rel[f"{kind}_path"]), np.asarray(batch[kind][i]))
                paths[f"{kind}_path"].append(rel[f"{kind}_path"])
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, root) from e
        raise
    return {
        "seed": seeds,
        "l_bce": np.asarray(batch["l_bce"], np.float32),
        "n_classes": np.asarray(batch["n_classes"], np.int64),
        "pixel_agreement": np.asarray(batch["pixel_agreement"], np.float32),
        "kept": np.asarray(batch["kept"], bool),
        **{k: np.asarray(v, dtype=object) for k, v in paths.items()},
    }


def manifest_frame(rows: Iterable[dict[str, np.ndarray]]):
    """Concatenate manifest batches into one DataFrame sorted by seed."""
    import pandas as pd

    frames = [pd.DataFrame({c: b[c] for c in MANIFEST_COLUMNS}) for b in rows if len(b["seed"])]
    if not frames:
        empty = {
            "seed": np.int64,
            "l_bce": np.float32,
            "n_classes": np.int64,
            "pixel_agreement": np.float32,
            "kept": bool,
        }
        return pd.DataFrame({c: np.empty(0, dtype=empty.get(c, object)) for c in MANIFEST_COLUMNS})
    return pd.concat(frames, ignore_index=True).sort_values("seed", kind="stable").reset_index(drop=True)


def write_parquet_atomic(df, path: str | os.PathLike) -> str:
    """One Parquet file, written to a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, Path(path).parent) from e
        raise
    return str(path)


def read_manifest(path: str | os.PathLike):
    """(manifest DataFrame sorted by seed, the folder its relative paths start from).

    `path`: the manifest.parquet file, or the stage folder that holds it.
    """
    import pandas as pd

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / MANIFEST_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"manifest {str(p)!r} does not exist: run `scenimefy pairs` first, or pass its manifest.parquet"
        )
    try:
        df = pd.read_parquet(p)
    except Exception as e:  # noqa: BLE001 - any reader failure: not a manifest
        raise ValueError(f"{str(p)!r} is not a readable Parquet manifest: {type(e).__name__}: {e}") from e
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{str(p)!r} is not a stage-2 manifest: missing columns {missing}")
    for column in PATH_COLUMNS:
        for row, rel in enumerate(df[column].tolist()):
            check_inside(rel, where=f"manifest {str(p)!r} row {row} {column}")
    return df.sort_values("seed", kind="stable").reset_index(drop=True), p.parent


def check_inside(rel: object, *, where: str) -> str:
    """`rel` as a path that stays inside its base folder: relative, without `..`; else ValueError.

    Manifests name their files relative to their own folder; an absolute or `../` path would read
    (and hard-link into an export) files anywhere on the machine.
    """
    text = rel if isinstance(rel, str) else ""
    parts = Path(text).parts
    if not text or "\0" in text or Path(text).is_absolute() or ".." in parts or "\\" in text or ":" in parts[0]:
        raise ValueError(
            f"{where}: {rel!r} is not a relative path inside the manifest's folder (absolute and '..' paths are "
            "refused); regenerate the manifest with `scenimefy pairs`"
        )
    return text


def select_from_manifest(manifest, *, threshold: float, min_classes: int):
    """The manifest with `kept` recomputed for this threshold and class minimum (a copy).

    The rule is `segmentation.keep_pair` on the stored scores: no image is read.
    """
    df = manifest.copy()
    kept = keep_pair(
        torch.from_numpy(df["l_bce"].to_numpy(np.float32, copy=True)),
        torch.from_numpy(df["n_classes"].to_numpy(np.int64, copy=True)),
        threshold=threshold,
        min_classes=min_classes,
    )
    df["kept"] = kept.numpy().astype(bool)
    return df


def describe_scores(manifest) -> str:
    """L_BCE quantiles and the class-count histogram, in one line (for errors and logs)."""
    l_bce = manifest["l_bce"].to_numpy(np.float64)
    if l_bce.size == 0:
        return "no candidates scored"
    qs = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
    quant = ", ".join(f"{int(q * 100)}%: {v:.4f}" for q, v in zip(qs, np.quantile(l_bce, qs)))
    values, counts = np.unique(manifest["n_classes"].to_numpy(np.int64), return_counts=True)
    hist = ", ".join(f"{v}: {c}" for v, c in zip(values, counts))
    return f"{l_bce.size} candidates; L_BCE quantiles {quant}; photos with n classes {{{hist}}}"


def nothing_kept_error(manifest, *, threshold: float, min_classes: int, manifest_path: str = "") -> ValueError:
    where = f" --manifest {manifest_path}" if manifest_path else ""
    return ValueError(
        f"no pair has L_BCE < {threshold} and at least {min_classes} classes: {describe_scores(manifest)}. "
        f"Pick a threshold inside the distribution (`scenimefy select{where} --threshold T`) or check the generators"
    )


# ----------------------------------------------------------------------------------------
# Exporting the kept pairs in the translator's layout


def _existing_parent(path: str | os.PathLike) -> Path:
    """`path`, or its nearest ancestor that exists (a folder about to be created)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing_parent(path)).free


def check_disk_space(directory: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise ValueError before writing when the disk holding `directory` lacks `needed_bytes`."""
    free = _free_bytes(directory)
    if free < needed_bytes:
        raise ValueError(
            f"not enough disk space for {what} under {directory}: need about {needed_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free; free some space or set run.output_dir to another disk"
        )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the candidates are immutable: a hard link costs no space
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
        shutil.copyfile(src, dst)


def export_pairs(rows: Iterable[tuple[int, str, str]], out_dir: str | os.PathLike, *, info: dict | None = None) -> int:
    """Write `out_dir/trainA/<seed:08d>.png` (x^p) and `trainB/<seed:08d>.png` (y^p), all or nothing.

    `rows`: (seed, photo file, anime file). The folder is written by `atomic_path`: on any
    error it is removed and a previous `out_dir` is left as it was. `info` is saved as
    `out_dir/selection.json` (with the count). Returns the number of pairs.
    """
    out = Path(out_dir).absolute()
    count = 0
    try:
        with atomic_path(out, owned_by=(SELECTION_FILE,)) as tmp:
            tmp = Path(tmp)
            (tmp / "trainA").mkdir(parents=True)
            (tmp / "trainB").mkdir()
            for seed, photo, anime in rows:
                name = f"{int(seed):08d}.png"
                _link_or_copy(str(photo), str(tmp / "trainA" / name))
                _link_or_copy(str(anime), str(tmp / "trainB" / name))
                count += 1
            (tmp / SELECTION_FILE).write_text(json.dumps({**(info or {}), "pairs": count}, indent=2) + "\n")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, out.parent) from e
        raise
    return count


def materialize_selection(
    manifest_path: str | os.PathLike,
    *,
    threshold: float,
    min_classes: int,
    out_dir: str | os.PathLike,
    limit: int = 0,
) -> dict[str, Any]:
    """Export the pairs kept at this threshold from the stored candidates (no segmentation).

    `limit` > 0 keeps only the first `limit` kept pairs by seed (the streaming mode's K).
    Raises ValueError naming the score distribution when nothing is kept, and before any work
    when `out_dir` is a non-empty folder that is not a previous selection (nothing is replaced
    that scenimefy did not write). Returns counts and paths: {"candidates", "kept", "exported",
    "keep_rate", "threshold", "min_classes", "out_dir"}.
    """
    check_replaceable(out_dir, what="selection folder --out", also=(SELECTION_FILE,))
    df, root = read_manifest(manifest_path)
    df = select_from_manifest(df, threshold=threshold, min_classes=min_classes)
    kept = df[df["kept"]]
    if kept.empty:
        raise nothing_kept_error(df, threshold=threshold, min_classes=min_classes, manifest_path=str(manifest_path))
    if limit > 0:
        kept = kept.iloc[:limit]
    missing = [p for p in kept["photo_path"].tolist() + kept["anime_path"].tolist() if not (root / p).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} candidate image(s) listed in the manifest are missing under {root} (e.g. {missing[0]}); "
            "rerun `scenimefy pairs` with the same run name to regenerate them"
        )
    if os.stat(root).st_dev != os.stat(_existing_parent(out_dir)).st_dev:  # no hard links: real copies
        sizes = sum((root / p).stat().st_size for p in kept["photo_path"].tolist() + kept["anime_path"].tolist())
        check_disk_space(out_dir, int(sizes * 1.05), "the selected pairs")
    rows = ((s, root / a, root / b) for s, a, b in zip(kept["seed"], kept["photo_path"], kept["anime_path"]))
    info = {
        "manifest": str((root / MANIFEST_FILE).absolute()),
        "threshold": float(threshold),
        "min_classes": int(min_classes),
        "limit": int(limit),
        "candidates": int(len(df)),
        "kept": int(df["kept"].sum()),
    }
    exported = export_pairs(rows, out_dir, info=info)
    return {
        "candidates": int(len(df)),
        "kept": int(df["kept"].sum()),
        "exported": exported,
        "keep_rate": float(df["kept"].mean()),
        "threshold": float(threshold),
        "min_classes": int(min_classes),
        "out_dir": str(Path(out_dir).absolute()),
        "seeds": kept["seed"].to_numpy(np.int64),
    }
