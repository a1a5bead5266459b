"""Ray Data: read image folders from any pyarrow filesystem, decode once, shard to workers.

`prepare_images` / `prepare_pairs` list a folder (local path, NFS, s3://, gs://, ...), decode
and resize every image in parallel Ray tasks with tolerant decoding, and cache the result as
Parquet (uint8 tensors) under the cache directory, keyed by the file list and the load size.
Training then reads the Parquet cache; each Ray Train worker iterates its own shard. Drivers
that prepare the same set at once (concurrent Tune trials) take turns under a file lock: one
decodes, the others read its cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow.fs as pafs

from scenimefy.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, resize_square, walk_folders
from scenimefy.data.images import atomic_path

MARKER = "_prepared.json"


@dataclass
class PreparedSet:
    """A decoded, resized dataset in Parquet, with what was skipped on the way."""

    path: str  # directory of Parquet files
    num_rows: int
    num_listed: int
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded
    upscaled: int = 0  # images smaller than load_size (upscaled, with a warning)
    unmatched: int = 0  # pairs only: names present in one of trainA/ trainB/ only


# ----------------------------------------------------------------------------------------
# Listing


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path or a URI (s3://, gs://, hdfs://, file://)."""
    if "://" not in uri:
        uri = os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types here
        raise ValueError(f"cannot open {uri!r}: {e}") from None


def list_images(uri: str, *, what: str) -> tuple[pafs.FileSystem, list[str]]:
    """All image files under `uri` (recursive, sorted). Errors name the folder and the fix."""
    if not uri:
        raise ValueError(f"no {what} folder given: set data.{what}=PATH")
    fs, root = filesystem_for(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"{what} folder {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        paths = [root] if root.lower().endswith(IMAGE_EXTENSIONS) else []
    elif isinstance(fs, pafs.LocalFileSystem):
        # pyarrow's recursive listing follows a symlink cycle until the path is too long, listing
        # every file many times: walk_folders enters each folder once.
        paths = sorted(
            os.path.join(folder, f)
            for folder, files in walk_folders(root)
            for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    else:
        entries = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        paths = sorted(
            e.path
            for e in entries
            if e.type == pafs.FileType.File
            and e.path.lower().endswith(IMAGE_EXTENSIONS)
            and not any(part.startswith(".") for part in PurePosixPath(e.path[len(root) :]).parts)
        )
    if not paths:
        raise ValueError(f"{what} folder {uri!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return fs, paths


def match_pairs(uri: str) -> tuple[pafs.FileSystem, list[tuple[str, str]], int]:
    """(trainA/k, trainB/k) pairs matched by relative path without extension; count the unmatched."""
    fs_a, a = list_images(_join(uri, "trainA"), what="pairs")
    _fs_b, b = list_images(_join(uri, "trainB"), what="pairs")
    key = lambda p, base: str(PurePosixPath(p[len(base) :].lstrip("/")).with_suffix(""))  # noqa: E731
    base_a, base_b = filesystem_for(_join(uri, "trainA"))[1], filesystem_for(_join(uri, "trainB"))[1]
    by_b = {key(p, base_b): p for p in b}
    pairs = [(p, by_b[key(p, base_a)]) for p in a if key(p, base_a) in by_b]
    unmatched = len(a) + len(b) - 2 * len(pairs)
    if not pairs:
        raise ValueError(f"pairs folder {uri!r}: no file name appears in both trainA/ and trainB/")
    return fs_a, pairs, unmatched


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


# ----------------------------------------------------------------------------------------
# Decoding UDFs (run inside Ray tasks; plain functions so they are testable without Ray)


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def decode_rows(
    batch: dict[str, np.ndarray], *, uri: str, size: int, columns: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Decode and resize the files named in `columns`; rows with an unreadable file are dropped."""
    fs, _ = filesystem_for(uri)
    n = len(batch[columns[0]])
    images = {c: [] for c in columns}
    kept, upscaled = [], []
    for i in range(n):
        try:
            decoded = [decode_image(_read(fs, str(batch[c][i])), str(batch[c][i])) for c in columns]
        except (ImageDecodeError, OSError) as e:
            print(f"[data] skipped: {e}", flush=True)
            continue
        for c, img in zip(columns, decoded):
            images[c].append(resize_square(img, size))
        kept.append(i)
        upscaled.append(any(min(img.size) < size for img in decoded))
    out: dict[str, np.ndarray] = {c: np.asarray(batch[c])[kept] for c in columns}
    for c in columns:
        name = "image" if c == "path" else "image_" + c[-1]
        out[name] = np.stack(images[c]) if kept else np.zeros((0, size, size, 3), np.uint8)
    out["upscaled"] = np.asarray(upscaled, dtype=bool)
    return out


# ----------------------------------------------------------------------------------------
# Preparation (driver side)


def _cache_key(rows: list, size: int) -> str:
    h = hashlib.sha256(f"v1|{size}|".encode())
    for row in rows:
        h.update(repr(row).encode())
    return h.hexdigest()[:16]


def prepare_images(uri: str, *, size: int, cache_dir: str, what: str) -> PreparedSet:
    fs, paths = list_images(uri, what=what)
    return _prepare([{"path": p} for p in paths], uri=uri, size=size, cache_dir=cache_dir, what=what, columns=("path",))


def prepare_pairs(uri: str, *, size: int, cache_dir: str) -> PreparedSet:
    _fs, pairs, unmatched = match_pairs(uri)
    if unmatched:
        warnings.warn(
            f"pairs folder {uri!r}: {unmatched} file(s) have no partner in the other folder and are ignored",
            stacklevel=2,
        )
    rows = [{"path_a": a, "path_b": b} for a, b in pairs]
    prepared = _prepare(rows, uri=uri, size=size, cache_dir=cache_dir, what="pairs", columns=("path_a", "path_b"))
    prepared.unmatched = unmatched
    return prepared


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), held across processes on one filesystem.

    `flock` is per open file, so threads and processes alike take turns; NFSv4 and EFS carry it
    between hosts. The lock file stays (it is empty, and removing it would race a waiting holder).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare(
    rows: list[dict], *, uri: str, size: int, cache_dir: str, what: str, columns: tuple[str, ...]
) -> PreparedSet:
    out = Path(cache_dir) / f"{what}-{size}px-{_cache_key(rows, size)}"
    marker = out / MARKER
    if marker.is_file():  # the marker is written last: its folder is complete
        return PreparedSet(**json.loads(marker.read_text()))
    # One writer per cache key: a second driver waits, then reads the first one's cache. Without
    # the lock it would replace the folder while the first one's training reads it.
    with file_lock(Path(cache_dir) / f".{out.name}.lock"):
        if marker.is_file():
            return PreparedSet(**json.loads(marker.read_text()))
        return _decode_to_cache(rows, out=out, uri=uri, size=size, what=what, columns=columns)


def _decode_to_cache(
    rows: list[dict], *, out: Path, uri: str, size: int, what: str, columns: tuple[str, ...]
) -> PreparedSet:
    import ray
    import ray.data

    marker = out / MARKER
    num_blocks = max(1, min(len(rows) // 64 + 1, 64))
    ds = ray.data.from_items(rows, override_num_blocks=num_blocks).map_batches(
        decode_rows, fn_kwargs={"uri": uri, "size": size, "columns": columns}, batch_size=32, num_cpus=0.5
    )
    with atomic_path(out) as tmp:  # a folder of Parquet files, replacing any unfinished one
        ds.write_parquet(tmp)
        if not any(Path(tmp).glob("*.parquet")):
            raise ValueError(f"{what} folder {uri!r}: none of the {len(rows)} image files could be decoded")
        done = ray.data.read_parquet(tmp).select_columns([*columns, "upscaled"]).to_pandas()
    kept = set(done[columns[0]].tolist())
    skipped = [r[columns[0]] for r in rows if r[columns[0]] not in kept]
    prepared = PreparedSet(
        path=str(out), num_rows=len(done), num_listed=len(rows), skipped=skipped, upscaled=int(done["upscaled"].sum())
    )
    if prepared.upscaled:
        warnings.warn(
            f"{what}: {prepared.upscaled} image(s) are smaller than {size} px and were upscaled", stacklevel=4
        )
    if skipped:
        print(f"[data] {what}: skipped {len(skipped)} unreadable file(s) of {len(rows)}", flush=True)
    with atomic_path(marker) as m:
        Path(m).write_text(json.dumps(prepared.__dict__))
    return prepared


def check_resume_workers(run_storage: str | os.PathLike, num_workers: int, *, run_name: str) -> None:
    """Refuse to resume a Ray Train run on another number of workers (one line, before Ray starts).

    A checkpoint holds, per worker, its position in its own shard of each dataset and its random
    state; the global batch is `batch_size_per_worker x run.num_workers`. With another worker
    count the shards are cut differently and the epochs have another length, so the run could not
    continue the data order or the schedules it stopped in. `run_storage` is the run's Ray Train
    folder (`<output_dir>/ray/<name>`); each checkpoint there has the `config.yaml` it ran with.
    """
    import yaml

    saved = set()
    for config_file in sorted(Path(run_storage).glob("checkpoint_*/config.yaml")):
        try:
            saved.add(int(yaml.safe_load(config_file.read_text())["run"]["num_workers"]))
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            continue  # unreadable: Ray Train's own restore reports a broken checkpoint
    others = sorted(saved - {num_workers})
    if others:
        raise ValueError(
            f"cannot resume run {run_name!r} with run.num_workers={num_workers}: its checkpoints in {run_storage} were "
            f"trained with run.num_workers={others[-1]} (per-worker data positions, random states and the global "
            f"batch depend on it); rerun with run.num_workers={others[-1]}, or start a new run.name"
        )


def training_dataset(prepared: PreparedSet, columns: list[str]):
    """A prepared Parquet set as a Ray Train dataset, without Ray Data's progress bars.

    Every pass of a training stream re-executes its dataset, so each epoch of each stream drew
    a new set of bars from every worker's split coordinator: thousands of lines that buried the
    stage's own progress lines. Stage 2 (one long Ray Data job) keeps its bars.
    """
    import ray.data

    ds = ray.data.read_parquet(prepared.path).select_columns(columns)
    ds.context.enable_progress_bars = False
    return ds


# ----------------------------------------------------------------------------------------
# Worker side: a Ray Data shard as a BatchSource


class ShardSource:
    """Passes over a worker's `DataIterator`, locally shuffled with a seed per (seed, rank, pass)."""

    def __init__(self, shard, *, batch_size: int, columns: list[str], seed: int, rank: int, shuffle_buffer: int = 256):
        self.shard, self.batch_size, self.columns = shard, batch_size, columns
        self.seed, self.rank, self.shuffle_buffer = seed, rank, shuffle_buffer

    def passes(self, index: int):
        for batch in self.shard.iter_batches(
            batch_size=self.batch_size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=self.shuffle_buffer,
            local_shuffle_seed=(self.seed * 7919 + self.rank * 104729 + index) % (2**31),
        ):
            yield {c: batch[c] for c in self.columns}
