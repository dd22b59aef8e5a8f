"""Embedding extraction with an on-disk cache.

For every item the windows are cut exactly as streaming cuts them, every hidden state is
mean+std pooled, and the result is cached under a key made of the encoder identity
(kind, name, weights hash), window, hop, channel and the file's content hash. Retraining
a head, or choosing other layers, then reads the cache and takes seconds. A front end that
reads each window's streamed remake (``model.resynthesis.remake``) gets the windows of the clip's
remake beside its own, as the streaming engine gives them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.audio.files import load_audio
from spoofwatch.errors import AudioError, DataError
from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.level import levelled_pair
from spoofwatch.model.pooling import mean_std_pool, stored_precision
from spoofwatch.model.resynthesis.remake import StreamedRemake
from spoofwatch.model.spectral import front_end_states, remake_of, spectral_block
from spoofwatch.progress import progress as show_progress
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.cache_usage import LAST_USED, mark_used
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.store import (
    PACK_META,
    drop_resident,
    is_pack,
    open_pack,
    pack_path,
    temporary_of,
    write_pack,
)

logger = logging.getLogger(__name__)


# Rows of a memory-mapped set read at a time: bounded memory, few reads.
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class EmbeddingSet:
    """Pooled features of every window of every item.

    ``features`` is (windows, hidden_states, 2 * dim): float32 in memory, or (as ``extract``
    gives it from the cache) a read-only float16 memory map of a pack on disk, which the
    methods below read in chunks of rows. ``item_index[i]`` is the position in ``items`` of
    the item window ``i`` came from; ``t_start`` its start time. ``spectral`` (windows, d),
    when attached, is a second front end's pooled features of the same windows (float32, in
    memory: a few hundred columns); the head reads it after the chosen layers.
    """

    items: tuple[LabelledItem, ...]
    features: NDArray[np.floating[Any]]
    item_index: NDArray[np.int64]
    t_start: NDArray[np.float64]
    failed: tuple[tuple[str, str], ...]
    spectral: NDArray[np.float32] | None = None

    def labels(self) -> NDArray[np.int64]:
        """Per window: 1 = bona fide, 0 = spoof."""
        per_item = np.array([1 if it.label == "bonafide" else 0 for it in self.items], dtype=np.int64)
        return per_item[self.item_index]

    def width(self, layers: Sequence[int]) -> int:
        """Columns of the head's input for ``layers``."""
        extra = 0 if self.spectral is None else self.spectral.shape[1]
        return len(layers) * int(self.features.shape[2]) + extra

    def layer_rows(self, layers: Sequence[int], start: int, stop: int) -> NDArray[np.float32]:
        """Windows ``start:stop`` of the head's input: the chosen layers' pooled features
        (float32), then the spectral ones."""
        # The width spelled out, not -1: a set with no windows (``only`` keeping nothing) must
        # still give (0, width), so it can join a stack of training sets.
        rows = self.features[start:stop]
        chosen = np.asarray(rows[:, list(layers), :], dtype=np.float32).reshape(
            len(rows), len(layers) * self.features.shape[2]
        )
        if self.spectral is None:
            return chosen
        return np.concatenate([chosen, self.spectral[start:stop]], axis=1)

    def select_layers(
        self, layers: Sequence[int], rows: NDArray[np.bool_] | None = None
    ) -> NDArray[np.float32]:
        """The head's input (``layer_rows``) of every window, or of the windows where
        ``rows`` is true, read chunk by chunk."""
        total = len(self.features)
        count = total if rows is None else int(np.count_nonzero(rows))
        out = np.empty((count, self.width(layers)), dtype=np.float32)
        filled = 0
        for start in range(0, total, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, total)
            if rows is not None and not rows[start:stop].any():
                continue
            block = self.layer_rows(layers, start, stop)
            if rows is not None:
                block = block[rows[start:stop]]
            out[filled : filled + len(block)] = block
            filled += len(block)
            drop_resident(self.features)
        return out

    def only(self, keep: Sequence[bool] | NDArray[np.bool_]) -> EmbeddingSet:
        """The items where ``keep`` (one flag per item) is true, with their windows (in
        memory)."""
        flags = np.asarray(keep, dtype=bool)
        if flags.shape != (len(self.items),):
            raise DataError(f"expected one keep flag per item ({len(self.items)}), found shape {flags.shape}")
        windows = flags[self.item_index]
        position = np.cumsum(flags) - 1
        return replace(
            self,
            items=tuple(it for it, k in zip(self.items, flags, strict=True) if k),
            features=self.features[windows],
            item_index=position[self.item_index[windows]],
            t_start=self.t_start[windows],
            spectral=None if self.spectral is None else self.spectral[windows],
        )

    def with_spectral(
        self, other: EmbeddingSet, block: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None
    ) -> EmbeddingSet:
        """This set with ``other``'s features (every state, flattened, as float32, then
        through ``block`` when given) attached per window; both must come from the same
        items, windowing and channel."""
        same = (
            other.items == self.items
            and np.array_equal(other.item_index, self.item_index)
            and np.array_equal(other.t_start, self.t_start)
        )
        if not same:
            raise DataError("spectral and encoder embeddings must cover the same windows of the same items")
        flat = np.asarray(other.features.reshape(len(other.features), -1), dtype=np.float32)
        drop_resident(other.features)
        return replace(self, spectral=flat if block is None else block(flat))


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir_for(
    encoder: Encoder, window: WindowConfig, channel: str, level_dbfs: float | None = None
) -> Path:
    ident = encoder.identity
    key = (
        f"{ident.kind}-{ident.name}-{ident.weights_sha256[:16]}-L{ident.num_hidden_states}"
        f"-w{window.window_s}-h{window.hop_s}-{channel}"
    )
    if level_dbfs is not None:
        key += f"-level{level_dbfs:g}"
    return cache_root() / "embeddings" / key.replace("/", "_")


def remade_windows(
    remake: StreamedRemake, samples: NDArray[np.float32], window: WindowConfig
) -> NDArray[np.float32]:
    """The windows of a clip's streamed remake, one per window ``cut_windows`` cuts from the
    clip (same length, so same windows)."""
    return np.stack([w.samples for w in cut_windows(remake.clip(samples), window)])


def embed_windows(
    encoder: Encoder,
    windows: NDArray[np.float32],
    batch: int = 16,
    level_dbfs: float | None = None,
    remakes: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """All hidden states mean+std pooled: (windows, hidden_states, 2 * dim); with
    ``level_dbfs`` each window (and each remake) is first brought to that active level, as
    the detector does. ``remakes``: each window's streamed remake, for a front end that
    reads them."""
    n_states = encoder.identity.num_hidden_states
    dim = encoder.identity.hidden_size
    rate = encoder.identity.sample_rate
    out = np.zeros((len(windows), n_states, 2 * dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(windows), batch):
            end = start + batch
            chunk, remake_chunk = levelled_pair(
                torch.from_numpy(np.ascontiguousarray(windows[start:end])),
                None if remakes is None else torch.from_numpy(np.ascontiguousarray(remakes[start:end])),
                rate,
                level_dbfs,
            )
            states = front_end_states(encoder, chunk, remake_chunk)
            pooled = stored_precision(mean_std_pool(states, list(range(n_states))).numpy())
            out[start : start + len(chunk)] = pooled.reshape(len(chunk), n_states, 2 * dim)
    return out


def _channel_windows(
    item: LabelledItem, window: WindowConfig, channel: str
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64]] | str:
    """The item through ``channel``: its samples, windows and their start times, or why it
    has none."""
    try:
        clip = load_audio(item.path, window.sample_rate)
    except AudioError as exc:
        return str(exc)
    samples = get_channel(channel)(clip.samples, window.sample_rate)
    wins = cut_windows(samples, window)
    if not wins:
        return f"shorter than {window.min_s} s"
    return samples, np.stack([w.samples for w in wins]), np.array([w.t_start for w in wins], dtype=np.float64)


def _embed_cut(
    encoder: Encoder,
    cut: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64]],
    window: WindowConfig,
    level_dbfs: float | None,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    samples, windows, t_start = cut
    remake = remake_of(encoder)
    remakes = None if remake is None else remade_windows(remake, samples, window)
    return embed_windows(encoder, windows, level_dbfs=level_dbfs, remakes=remakes), t_start


def _embed_item(
    item: LabelledItem,
    encoder: Encoder,
    window: WindowConfig,
    channel: str,
    level_dbfs: float | None,
) -> tuple[NDArray[np.float32], NDArray[np.float64]] | str:
    """One item's pooled windows and their start times, or why it has none."""
    cut = _channel_windows(item, window, channel)
    return cut if isinstance(cut, str) else _embed_cut(encoder, cut, window, level_dbfs)


def _write_cached(cached: Path, pooled: NDArray[np.float32], t_start: NDArray[np.float64]) -> None:
    tmp = temporary_of(cached)
    np.savez(tmp, features=pooled.astype(np.float16), t_start=t_start)
    os.replace(tmp, cached)


def prefill(
    items: Sequence[LabelledItem],
    encoders: Sequence[Encoder],
    window: WindowConfig,
    *,
    channel: str = "clean",
    progress: bool = True,
    level_dbfs: float | None = None,
) -> None:
    """Fill several front ends' per-item caches in one pass, so an item that two of them lack
    is decoded and put through the channel once: an augmented channel's codec chain costs
    about as much as the spectral block it feeds. Items that fail are left for ``extract``
    to report."""
    directories = [cache_dir_for(e, window, channel, level_dbfs) for e in encoders]
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
    for item in show_progress(
        items, total=len(items), desc=f"channel {channel}", unit="clip", enabled=progress
    ):
        try:
            key = file_sha1(item.path)
        except OSError:
            continue
        missing = [
            (e, d / f"{key}.npz")
            for e, d in zip(encoders, directories, strict=True)
            if not (d / f"{key}.npz").is_file()
        ]
        if len(missing) < 2:
            continue  # one front end alone shares nothing: extract() makes it
        cut = _channel_windows(item, window, channel)
        if isinstance(cut, str):
            continue
        for encoder, cached in missing:
            _write_cached(cached, *_embed_cut(encoder, cut, window, level_dbfs))


def ensure_cached(
    items: Sequence[LabelledItem],
    encoder: Encoder,
    window: WindowConfig,
    directory: Path,
    *,
    channel: str = "clean",
    progress: bool = True,
    level_dbfs: float | None = None,
) -> tuple[list[Path | None], list[tuple[str, str]]]:
    """Every item's per-item cache file (None where the item has no windows) and the items
    that failed, extracting what is not cached yet. Each file is written whole (beside its
    name, then renamed), so an interrupted run resumes at the first item it had not written."""
    directory.mkdir(parents=True, exist_ok=True)
    mark_used(directory / LAST_USED)  # `spoofwatch cache prune --unused-days` reads it
    entries: list[Path | None] = []
    failed: list[tuple[str, str]] = []
    for item in show_progress(
        items, total=len(items), desc=f"embed {channel}", unit="clip", enabled=progress
    ):
        try:
            key = file_sha1(item.path)
        except OSError as exc:
            failed.append((str(item.path), str(exc)))
            entries.append(None)
            continue
        cached = directory / f"{key}.npz"
        if not cached.is_file():
            made = _embed_item(item, encoder, window, channel, level_dbfs)
            if isinstance(made, str):
                failed.append((str(item.path), made))
                entries.append(None)
                continue
            _write_cached(cached, *made)
        entries.append(cached)
    return entries, failed


def extract(
    items: Sequence[LabelledItem],
    encoder: Encoder,
    window: WindowConfig,
    *,
    channel: str = "clean",
    progress: bool = True,
    cache: bool = True,
    level_dbfs: float | None = None,
) -> EmbeddingSet:
    """Pooled features for every window of every item. With ``cache`` they are read from
    (or first written to) the per-item cache and packed into one memory-mapped store
    (``store.py``): the set's ``features`` are then a read-only float16 memory map.
    Without it they are computed into memory at float32."""
    n_states = encoder.identity.num_hidden_states
    dim = encoder.identity.hidden_size
    if not cache:
        return _extract_in_memory(items, encoder, window, channel, progress, level_dbfs)
    directory = cache_dir_for(encoder, window, channel, level_dbfs)
    entries, failed = ensure_cached(
        items, encoder, window, directory, channel=channel, progress=progress, level_dbfs=level_dbfs
    )
    for path, reason in failed:
        logger.warning("skipped %s: %s", path, reason)
    target = pack_path(directory, [None if e is None else e.stem for e in entries])
    if not is_pack(target):
        logger.info("packing %d items into %s", len(entries), target)
        write_pack(target, entries, (n_states, 2 * dim))
    pack = open_pack(target)
    mark_used(target / PACK_META)
    return EmbeddingSet(
        items=tuple(items),
        features=pack.features,
        item_index=pack.item_index,
        t_start=pack.t_start,
        failed=tuple(failed),
    )


def _extract_in_memory(
    items: Sequence[LabelledItem],
    encoder: Encoder,
    window: WindowConfig,
    channel: str,
    progress: bool,
    level_dbfs: float | None,
) -> EmbeddingSet:
    feats: list[NDArray[np.float32]] = []
    index: list[NDArray[np.int64]] = []
    starts: list[NDArray[np.float64]] = []
    failed: list[tuple[str, str]] = []
    for i, item in enumerate(
        show_progress(items, total=len(items), desc=f"embed {channel}", unit="clip", enabled=progress)
    ):
        made = _embed_item(item, encoder, window, channel, level_dbfs)
        if isinstance(made, str):
            failed.append((str(item.path), made))
            continue
        pooled, t0 = made
        feats.append(pooled)
        index.append(np.full(len(pooled), i, dtype=np.int64))
        starts.append(t0)
    for path, reason in failed:
        logger.warning("skipped %s: %s", path, reason)
    n_states = encoder.identity.num_hidden_states
    dim = encoder.identity.hidden_size
    return EmbeddingSet(
        items=tuple(items),
        features=np.concatenate(feats) if feats else np.zeros((0, n_states, 2 * dim), np.float32),
        item_index=np.concatenate(index) if index else np.zeros(0, np.int64),
        t_start=np.concatenate(starts) if starts else np.zeros(0, np.float64),
        failed=tuple(failed),
    )


def extract_with_spectral(
    items: Sequence[LabelledItem],
    encoder: Encoder,
    spectral: Encoder | None,
    window: WindowConfig,
    *,
    channel: str = "clean",
    progress: bool = True,
    level_dbfs: float | None = None,
) -> EmbeddingSet:
    """``extract`` with the spectral front end's block (``model.spectral``) attached; each
    front end's pooled states are cached on their own, made in one pass over the items."""
    if spectral is not None:
        prefill(items, [encoder, spectral], window, channel=channel, progress=progress, level_dbfs=level_dbfs)
    main = extract(items, encoder, window, channel=channel, progress=progress, level_dbfs=level_dbfs)
    if spectral is None:
        return main
    front_end = spectral
    return main.with_spectral(
        extract(items, spectral, window, channel=channel, progress=progress, level_dbfs=level_dbfs),
        lambda pooled: spectral_block(front_end, pooled),
    )
