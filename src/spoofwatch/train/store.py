"""On-disk feature store: one item list's pooled window features in one memory-mapped file.

Extraction caches each item's pooled window features on its own (a float16 ``.npz`` named by
the file's content hash, ``extract.py``); that per-item cache is what lets an interrupted
extraction resume where it stopped. A *pack* joins the cached items of one item list, in
order, into one ``(windows, states, 2 * dim)`` float16 ``.npy`` that is opened memory-mapped,
so a training set of many hours is read from disk in chunks instead of held in memory.
float16 is the per-item cache's own precision: a pack holds exactly the values the cache
gives (no second rounding). A pack is named by the hash of its items' ordered cache keys,
so a rerun over the same items opens the pack it wrote.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError

PACK_FORMAT = 1
STORE_DTYPE = np.float16
_FEATURES = "features.npy"
_INDEX = "index.npz"
PACK_META = "pack.json"
_TEMPORARY = re.compile(r"\.(\d+)\.tmp(?:\.npz)?$")


def temporary_of(path: Path) -> Path:
    """Where this process writes ``path`` (a per-item ``.npz`` or a pack folder) before
    renaming it into place; the process id in the name tells a killed run's leftover from
    a live run's (``cache_usage``)."""
    if path.suffix == ".npz":
        return path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def temporary_pid(name: str) -> int | None:
    """The process id in a name ``temporary_of`` made, or None for any other name."""
    found = _TEMPORARY.search(name)
    return None if found is None else int(found.group(1))


@dataclass(frozen=True)
class Pack:
    """A pack opened: ``features`` is a read-only memory map; ``item_index[i]`` is the
    position in the item list of the item window ``i`` came from."""

    path: Path
    features: NDArray[np.float16]
    item_index: NDArray[np.int64]
    t_start: NDArray[np.float64]


def pack_path(directory: Path, keys: Sequence[str | None]) -> Path:
    """Where the pack of these items (cache keys in item order; None for an item with no
    cached windows) lives under a cache directory."""
    digest = hashlib.sha1(f"pack{PACK_FORMAT}\n".encode())
    for key in keys:
        digest.update(f"{key or '-'}\n".encode())
    return directory / "packs" / digest.hexdigest()


def cached_windows(npz: Path) -> tuple[int, ...]:
    """Shape of the features in one per-item cache file, read from its header only."""
    with np.load(npz) as data, data.zip.open("features.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(member)
    return tuple(int(x) for x in shape)


def write_pack(target: Path, entries: Sequence[Path | None], feature_shape: tuple[int, int]) -> None:
    """Join per-item cache files (``entries`` in item order; None: the item has no windows)
    into a pack at ``target``, written beside it and renamed, so a pack is whole or absent."""
    counts = [0 if npz is None else cached_windows(npz)[0] for npz in entries]
    for npz in entries:
        if npz is not None and cached_windows(npz)[1:] != feature_shape:
            raise DataError(f"{npz}: expected features of shape (windows, {feature_shape}), found another")
    total = sum(counts)
    tmp = temporary_of(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    features = np.lib.format.open_memmap(
        tmp / _FEATURES, mode="w+", dtype=STORE_DTYPE, shape=(total, *feature_shape)
    )
    item_index = np.repeat(np.arange(len(entries), dtype=np.int64), counts)
    t_start = np.zeros(total, dtype=np.float64)
    row = 0
    for npz, count in zip(entries, counts, strict=True):
        if npz is None:
            continue
        with np.load(npz) as data:
            features[row : row + count] = data["features"].astype(STORE_DTYPE)
            t_start[row : row + count] = data["t_start"]
        row += count
    features.flush()
    del features
    np.savez(tmp / _INDEX, item_index=item_index, t_start=t_start)
    (tmp / PACK_META).write_text(json.dumps({"format": PACK_FORMAT, "windows": total, "items": len(entries)}))
    try:
        os.replace(tmp, target)
    except OSError:  # another process wrote the same pack first
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise


def open_pack(path: Path) -> Pack:
    features = np.load(path / _FEATURES, mmap_mode="r")
    with np.load(path / _INDEX) as index:
        return Pack(path, features, index["item_index"], index["t_start"])


def is_pack(path: Path) -> bool:
    return all((path / name).is_file() for name in (_FEATURES, _INDEX, PACK_META))


def drop_resident(array: NDArray[np.generic]) -> None:
    """Let go of the pages of a memory-mapped array this process has read (they stay in the
    page cache, but no longer count in its resident memory); nothing for an in-memory one."""
    base: object = array
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            handle = getattr(base, "_mmap", None)  # numpy keeps the mmap object here
            if isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
                handle.madvise(mmap.MADV_DONTNEED)
            return
        base = base.base
