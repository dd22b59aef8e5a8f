"""What the embedding cache holds, and removing what can be remade.

Under ``<cache>/embeddings/<extractor>/`` (one folder per encoder, window, channel and level):
one ``<sha1>.npz`` per item, the resumable per-item cache an extraction writes, and
``packs/<digest>/``, each the memory-mapped join of one item list (``store.py``). A pack is
remade from the per-item files in minutes, so packs are always safe to remove; the per-item
files cost an extraction to remake (about 25 minutes per channel for 28,000 clips on two
cores), so they go only when their folder has not been used for a given number of days.
Temporaries that an interrupted run left behind (``*.<pid>.tmp.npz``, ``<digest>.<pid>.tmp``)
go whenever their process is gone.

Use is recorded by touching a marker: ``last-used`` in an extractor folder whenever an
extraction reads it, a pack's ``pack.json`` whenever it is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spoofwatch.errors import ConfigError
from spoofwatch.train.store import PACK_META, temporary_pid

LAST_USED = "last-used"
DAY_S = 86400.0


def mark_used(path: Path) -> None:
    """Record that ``path`` (an extractor folder's marker or a pack's meta file) was used now."""
    with contextlib.suppress(OSError):  # a read-only or shared cache still serves, undated
        path.touch()


@dataclass(frozen=True)
class PackUsage:
    path: Path
    bytes: int
    last_used: float


@dataclass(frozen=True)
class ExtractorUsage:
    """One extractor folder: its per-item cache and its packs."""

    path: Path
    items: int
    item_bytes: int
    packs: tuple[PackUsage, ...]
    last_used: float

    @property
    def pack_bytes(self) -> int:
        return sum(p.bytes for p in self.packs)


@dataclass(frozen=True)
class Leftover:
    """A temporary of a run that was interrupted (its process no longer exists)."""

    path: Path
    bytes: int
    pid: int


@dataclass(frozen=True)
class CacheUsage:
    root: Path
    extractors: tuple[ExtractorUsage, ...]
    leftovers: tuple[Leftover, ...]
    others: tuple[tuple[Path, int], ...]  # everything else under the root: weights, corpus, ...

    @property
    def total_bytes(self) -> int:
        return (
            sum(e.item_bytes + e.pack_bytes for e in self.extractors)
            + sum(x.bytes for x in self.leftovers)
            + sum(size for _, size in self.others)
        )


@dataclass(frozen=True)
class Removal:
    path: Path
    bytes: int
    why: str


@dataclass
class PrunePlan:
    removals: list[Removal] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(base) / name).lstat().st_size
            except OSError:  # removed while we walked (a run finishing)
                continue
    return total


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OverflowError:
        return False
    return True


def _pack(path: Path) -> PackUsage:
    used = _mtime(path / PACK_META) or _mtime(path) or 0.0
    return PackUsage(path, _size(path), used)


def _extractor(path: Path, leftovers: list[Leftover]) -> ExtractorUsage:
    items = 0
    item_bytes = 0
    newest = 0.0
    for entry in os.scandir(path):
        if not entry.is_file():
            continue
        stat = entry.stat()
        pid = temporary_pid(entry.name)
        if pid is not None:
            if not process_exists(pid):
                leftovers.append(Leftover(Path(entry.path), stat.st_size, pid))
            continue
        if entry.name.endswith(".npz"):
            items += 1
            item_bytes += stat.st_size
            newest = max(newest, stat.st_mtime)
    packs: list[PackUsage] = []
    packs_dir = path / "packs"
    if packs_dir.is_dir():
        for folder in sorted(packs_dir.iterdir()):
            pid = temporary_pid(folder.name)
            if pid is not None:
                if not process_exists(pid):
                    leftovers.append(Leftover(folder, _size(folder), pid))
                continue
            if folder.is_dir():
                packs.append(_pack(folder))
    used = max([_mtime(path / LAST_USED) or 0.0, newest, *(p.last_used for p in packs)])
    return ExtractorUsage(path, items, item_bytes, tuple(packs), used)


def survey(root: Path) -> CacheUsage:
    """What ``root`` (the cache directory) holds."""
    if not root.is_dir():
        raise ConfigError(f"cache directory {root}: expected a folder (set SPOOFWATCH_CACHE or --cache)")
    leftovers: list[Leftover] = []
    extractors: list[ExtractorUsage] = []
    embeddings = root / "embeddings"
    if embeddings.is_dir():
        for folder in sorted(embeddings.iterdir()):
            if folder.is_dir():
                extractors.append(_extractor(folder, leftovers))
    others = tuple((entry, _size(entry)) for entry in sorted(root.iterdir()) if entry.name != "embeddings")
    return CacheUsage(root, tuple(extractors), tuple(leftovers), others)


def plan_prune(
    usage: CacheUsage, *, packs: bool = False, unused_days: float | None = None, now: float | None = None
) -> PrunePlan:
    """What to remove: always the leftovers of interrupted runs; with ``packs`` every pack;
    with ``unused_days`` the packs and whole extractor folders not used for that long."""
    if unused_days is not None and unused_days < 0:
        raise ConfigError(f"--unused-days: expected a number of days >= 0, found {unused_days:g}")
    clock = time.time() if now is None else now
    cutoff = None if unused_days is None else clock - unused_days * DAY_S
    plan = PrunePlan()
    plan.removals.extend(
        Removal(x.path, x.bytes, f"left by an interrupted run (process {x.pid} is gone)")
        for x in usage.leftovers
    )
    for extractor in usage.extractors:
        if cutoff is not None and extractor.last_used < cutoff:
            age = (clock - extractor.last_used) / DAY_S
            plan.removals.append(
                Removal(
                    extractor.path,
                    extractor.item_bytes + extractor.pack_bytes,
                    f"extractor folder unused for {age:.1f} days ({extractor.items} items, packs included)",
                )
            )
            continue
        for pack in extractor.packs:
            if packs:
                plan.removals.append(Removal(pack.path, pack.bytes, "pack (remade from the per-item cache)"))
            elif cutoff is not None and pack.last_used < cutoff:
                age = (clock - pack.last_used) / DAY_S
                plan.removals.append(Removal(pack.path, pack.bytes, f"pack unused for {age:.1f} days"))
    return plan


def carry_out(removals: Iterable[Removal]) -> list[tuple[Removal, str]]:
    """Remove each path; return those that could not be removed, with why."""
    failed: list[tuple[Removal, str]] = []
    for removal in removals:
        try:
            if removal.path.is_dir() and not removal.path.is_symlink():
                shutil.rmtree(removal.path)
            else:
                removal.path.unlink()
        except FileNotFoundError:  # already gone (another prune, a finished run)
            continue
        except OSError as exc:
            failed.append((removal, str(exc)))
    return failed


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe(usage: CacheUsage, now: float | None = None) -> Sequence[str]:
    """The lines ``spoofwatch cache list`` prints."""
    clock = time.time() if now is None else now
    lines = [f"cache {usage.root}: {human_bytes(usage.total_bytes)}"]
    if usage.extractors:
        lines.append("embeddings (per-item cache | packs | last used):")
    for e in usage.extractors:
        age = (clock - e.last_used) / DAY_S
        lines.append(
            f"  {e.path.name}: {e.items} items {human_bytes(e.item_bytes)} | "
            f"{len(e.packs)} packs {human_bytes(e.pack_bytes)} | {age:.1f} days ago"
        )
    if usage.leftovers:
        lines.append(
            f"left by interrupted runs: {len(usage.leftovers)} "
            f"({human_bytes(sum(x.bytes for x in usage.leftovers))}; `spoofwatch cache prune` removes them)"
        )
    if usage.others:
        lines.append("other (weights, corpora; never pruned):")
    for path, size in usage.others:
        lines.append(f"  {path.name}: {human_bytes(size)}")
    return lines
