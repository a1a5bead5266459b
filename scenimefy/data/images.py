"""Tensors <-> images, sample grids, and atomic writes.

Tensors are float RGB in [-1, 1], (B, 3, H, W); arrays are uint8 (H, W, 3) or (B, H, W, 3).
Every file the package writes (images, checkpoints, JSON, Parquet) goes through
`atomic_path`, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    import torch

# torch is imported inside the two tensor functions only: the file helpers and grids are
# used by data workers and the demo generator, which should not pay torch's import time.

# ----------------------------------------------------------------------------------------
# Tensors <-> uint8


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) float in [-1, 1] -> (B, H, W, 3) or (H, W, 3) uint8.

    Values are clamped to [-1, 1], mapped by (v + 1) * 127.5 and rounded to the nearest
    integer (the authors truncate, which darkens every image by half a level).
    """
    import torch

    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"to_uint8 expects (B, 3, H, W) or (3, H, W), got {tuple(t.shape)}")
    v = t.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    v = torch.round((v + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return v.movedim(-3, -1).contiguous().numpy()  # (..., H, W, 3)


def from_uint8(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3), numpy or torch -> float32 (B, 3, H, W) in [-1, 1]."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if t.dtype != torch.uint8:
        raise ValueError(f"from_uint8 expects uint8 data, got {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"from_uint8 expects (H, W, 3) or (B, H, W, 3), got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).to(torch.float32).div(127.5).sub(1.0).contiguous()  # (B, 3, H, W)


# ----------------------------------------------------------------------------------------
# Atomic writes


OWNED_MARKER = ".scenimefy-output"  # in every folder atomic_path writes: "this folder is ours to replace"
LEFTOVER_AGE_S = 3600.0  # a temporary or moved-aside entry older than this is a killed write's leftover
_swept: set[str] = set()  # folders already cleaned of leftovers by this process


class NotOursError(ValueError):
    """A folder would be replaced, but scenimefy did not write it (one line: the path and the fix)."""


def is_owned_folder(path: str | os.PathLike, also: Sequence[str] = ()) -> bool:
    """True when `path` is an empty folder or holds `OWNED_MARKER` (or one of the `also` names)."""
    try:
        names = set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not names or OWNED_MARKER in names or any(n in names for n in also)


def check_replaceable(path: str | os.PathLike, *, what: str = "output folder", also: Sequence[str] = ()) -> None:
    """Raise NotOursError unless `path` is absent, an empty folder, or a folder scenimefy wrote.

    `also`: further file names that mark a folder as ours (the manifest or record a command writes
    into its output), so outputs from before `OWNED_MARKER` existed are still recognised.
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        raise NotOursError(
            f"{what} {path} exists and is not a folder scenimefy wrote: nothing is replaced; choose a new path"
        )
    if not is_owned_folder(path, also):
        raise NotOursError(
            f"{what} {path} is not empty and was not written by scenimefy (no {OWNED_MARKER} in it): nothing is "
            "replaced; choose a new or empty folder"
        )


def clean_leftovers(directory: str | os.PathLike, *, min_age_s: float = LEFTOVER_AGE_S) -> list[str]:
    """Remove what killed writes left in `directory`; returns the removed paths.

    Leftovers are `atomic_path`'s hidden names: `.NAME.<12 hex>.tmp[SUFFIX]` (a write that never
    finished) and `.NAME.old-<12 hex>` (a replaced folder not yet deleted). Only entries older than
    `min_age_s` go, so a write in progress in another process is never touched.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not _LEFTOVER.fullmatch(entry.name):
            continue
        try:
            if now - _last_change(entry) < min_age_s:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        except OSError:
            continue  # gone already, or not ours to remove: left alone
        removed.append(entry.path)
    return removed


def _last_change(entry: os.DirEntry) -> float:
    """The newest mtime of `entry` and, for a folder, of its direct subfolders (where writers add files)."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        with os.scandir(entry.path) as children:
            for child in children:
                if child.is_dir(follow_symlinks=False):
                    newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    return newest


_LEFTOVER = re.compile(r"\..+\.(?:[0-9a-f]{12}\.tmp.*|old-[0-9a-f]{12})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True, owned_by: Sequence[str] = ()) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    The temporary name is hidden (leading dot) and keeps the suffix, so writers that pick a
    format from the suffix still work. On an exception the temporary file is removed and the
    previous `path` (if any) is left untouched. Parent folders are created. `durable` fsyncs
    the bytes before the rename (survives power loss, not only a crash; about 3 ms a file).
    The first write into a folder in a process removes the leftovers of killed writes there
    (`clean_leftovers`).

        with atomic_path("ckpt/state.pt") as tmp:
            torch.save(state, tmp)

    The writer may also make a folder at the temporary path: that folder gets `OWNED_MARKER`
    and then replaces a previous folder `path` as a whole (the old one is moved aside, then
    deleted), and is removed on an exception. A previous folder is replaced only when it is
    empty or scenimefy wrote it (`OWNED_MARKER`, or one of the names in `owned_by`); any other
    raises NotOursError before the writer runs. A folder's files are not fsynced.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if directory not in _swept:
        _swept.add(directory)
        clean_leftovers(directory)
    if os.path.isdir(path):
        check_replaceable(path, also=owned_by)
    suffix = os.path.splitext(name)[1]
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(f"atomic_path: nothing was written to the temporary file for {path}")
        if os.path.isdir(tmp):
            with open(os.path.join(tmp, OWNED_MARKER), "w") as f:
                f.write("written by scenimefy; replaced as a whole by its next write\n")
            _replace_dir(tmp, path, owned_by)
            return
        if durable:
            with contextlib.suppress(OSError):
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise


def _replace_dir(new: str, dst: str, owned_by: Sequence[str] = ()) -> None:
    """Rename folder `new` onto `dst`; an existing `dst` (ours: checked again) is moved aside and deleted."""
    old = None
    if os.path.lexists(dst):
        check_replaceable(dst, also=owned_by)
        old = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.old-{uuid.uuid4().hex[:12]}")
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pil_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return Image.registered_extensions().get(ext, "PNG") if ext else "PNG"


def save_image_atomic(path: str | os.PathLike, array: np.ndarray, *, durable: bool = False) -> str:
    """Write an (H, W, 3) (or (H, W)) uint8 array as an image, atomically; returns the path.

    The format comes from the suffix (PNG when there is none or it is unknown); JPEG at
    quality 95. Parent folders are created. Not fsynced unless `durable` (images are many
    and cheap to regenerate; a crash still never leaves a partial file under `path`).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"save_image_atomic expects (H, W, 3) uint8, got {array.shape} {array.dtype}")
    path = os.fspath(path)
    fmt = _pil_format(path)
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(path, durable=durable) as tmp:
        Image.fromarray(array).save(tmp, format=fmt, **kwargs)
    return path


# ----------------------------------------------------------------------------------------
# Grids


def _as_rgb(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise ValueError(f"image_grid expects uint8 images, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image_grid expects (H, W, 3) or (H, W) images, got {a.shape}")
    return a


def _text_size(draw: ImageDraw.ImageDraw, font, text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def image_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 2,
    background: int = 255,
) -> np.ndarray:
    """Lay out (H, W, 3) uint8 images in rows into one (H', W', 3) uint8 image.

    Column j is as wide as its widest image, row i as high as its highest; smaller images
    are centred in their cell, `None` leaves a cell empty. `pad` pixels separate cells and
    frame the grid. Optional labels are drawn with PIL's default font above the columns and
    left of the rows. Without labels the size is
    (sum(row heights) + pad * (rows + 1), sum(column widths) + pad * (cols + 1)).
    """
    cells = [[_as_rgb(a) for a in row] for row in rows]
    n_rows = len(cells)
    n_cols = max((len(r) for r in cells), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("image_grid needs at least one image")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"image_grid: {len(row_labels)} row labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"image_grid: {len(col_labels)} column labels for {n_cols} columns")

    col_w = [max((r[j].shape[1] for r in cells if j < len(r) and r[j] is not None), default=0) for j in range(n_cols)]
    row_h = [max((a.shape[0] for a in r if a is not None), default=0) for r in cells]

    # Label margins, measured with the font that will draw them.
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = label_h = 0
    if row_labels is not None:
        label_w = max(_text_size(probe, font, str(s))[0] for s in row_labels) + pad
    if col_labels is not None:
        label_h = max(_text_size(probe, font, str(s))[1] for s in col_labels) + 2 * pad

    width = label_w + sum(col_w) + pad * (n_cols + 1)
    height = label_h + sum(row_h) + pad * (n_rows + 1)
    canvas = np.full((height, width, 3), background, dtype=np.uint8)

    x0 = [label_w + pad + sum(col_w[:j]) + pad * j for j in range(n_cols)]
    y0 = [label_h + pad + sum(row_h[:i]) + pad * i for i in range(n_rows)]
    for i, row in enumerate(cells):
        for j, a in enumerate(row):
            if a is None:
                continue
            h, w = a.shape[:2]
            top = y0[i] + (row_h[i] - h) // 2
            left = x0[j] + (col_w[j] - w) // 2
            canvas[top : top + h, left : left + w] = a

    if row_labels is None and col_labels is None:
        return canvas
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    ink = (0, 0, 0) if background >= 128 else (255, 255, 255)
    for j, text in enumerate(col_labels or []):
        tw, _ = _text_size(draw, font, str(text))
        left, top, _, _ = draw.textbbox((0, 0), str(text), font=font)
        draw.text((x0[j] + (col_w[j] - tw) // 2 - left, pad - top), str(text), fill=ink, font=font)
    for i, text in enumerate(row_labels or []):
        _, th = _text_size(draw, font, str(text))
        left, top, _, _ = draw.textbbox((0, 0), str(text), font=font)
        draw.text((pad // 2 - left, y0[i] + (row_h[i] - th) // 2 - top), str(text), fill=ink, font=font)
    return np.asarray(img).copy()
