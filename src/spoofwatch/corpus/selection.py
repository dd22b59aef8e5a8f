"""Caps (minutes per generator, per bona fide speaker) by deterministic round-robin, and splits.

Order inside a cap: spoofs round-robin over the generator's systems, inside a system over
target speakers, inside a speaker over files; bona fide round-robin over the speaker's files.
Files are visited in an order drawn from the seed (a hash of seed, card and path), pieces of a
file from its start, so a cap samples across files instead of taking the alphabetically first.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from spoofwatch.corpus.cards import CardCaps
from spoofwatch.corpus.config import BuildConfig
from spoofwatch.corpus.records import Piece, Skip


def stable_fraction(seed: int, text: str) -> float:
    """A number in [0, 1) from a hash of seed and text: the same on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def round_robin(queues: Sequence[Sequence[Piece]]) -> list[Piece]:
    out: list[Piece] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        out += [q[i] for q in queues if i < len(q)]
    return out


def _interleave(
    pieces: Sequence[Piece],
    key: Callable[[Piece], str],
    inner: Callable[[list[Piece]], list[Piece]],
    seed: int,
) -> list[Piece]:
    groups: dict[str, list[Piece]] = defaultdict(list)
    for p in pieces:
        groups[key(p)].append(p)
    names = sorted(groups, key=lambda g: (stable_fraction(seed, g), g))
    return round_robin([inner(groups[g]) for g in names])


def _by_file(pieces: list[Piece], seed: int) -> list[Piece]:
    return _interleave(
        pieces, lambda p: f"{p.card}/{p.path}", lambda ps: sorted(ps, key=lambda p: p.start), seed
    )


def cap_order(pieces: Sequence[Piece], seed: int) -> list[Piece]:
    """The order in which one generator's (or one speaker's) pieces are taken."""
    if not pieces:
        return []
    if pieces[0].labels.label == "bonafide":
        return _by_file(list(pieces), seed)
    return _interleave(
        pieces,
        lambda p: p.labels.system,
        lambda ps: _interleave(ps, lambda p: p.labels.speaker, lambda q: _by_file(q, seed), seed),
        seed,
    )


CARD_CAP_REASON = "over the card's"  # a skip reason's start when a card's own cap dropped the piece


def apply_caps(
    pieces: Sequence[Piece], config: BuildConfig, card_caps: Mapping[str, CardCaps] | None = None
) -> tuple[list[Piece], list[Skip]]:
    """Keep each generator's (spoof) and bona fide speaker's pieces up to the build's cap, in
    ``cap_order``; a card with its own lower cap also gives no more than that to the pool."""
    own_caps = card_caps or {}
    pools: dict[tuple[str, str], list[Piece]] = defaultdict(list)
    for p in pieces:
        if p.labels.label == "spoof":
            pools[("spoof", p.labels.generator)].append(p)
        else:
            pools[("bonafide", p.labels.speaker)].append(p)
    kept: list[Piece] = []
    dropped: list[Skip] = []
    for (label, name), pool in sorted(pools.items()):
        spoof = label == "spoof"
        what = "generator" if spoof else "speaker"
        cap_s = 60.0 * (config.generator_minutes if spoof else config.speaker_minutes)
        total = 0.0
        per_card: dict[str, float] = defaultdict(float)
        for p in cap_order(sorted(pool, key=lambda q: q.order), config.seed):
            own = own_caps.get(p.card, CardCaps())
            card_minutes = own.generator_minutes if spoof else own.speaker_minutes
            if total >= cap_s:
                dropped.append(Skip(p.card, p.path, f"over the {what} cap", f"{what} {name}", p.duration_s))
            elif card_minutes is not None and per_card[p.card] >= 60.0 * card_minutes:
                reason = f"{CARD_CAP_REASON} {what} cap"
                dropped.append(Skip(p.card, p.path, reason, f"{what} {name}", p.duration_s))
            else:
                kept.append(p)
                total += p.duration_s
                per_card[p.card] += p.duration_s
    return sorted(kept, key=lambda p: p.order), dropped


def split_speaker(speaker: str, aliases: Sequence[Sequence[str]]) -> str:
    """The key a speaker's split is decided by: the first name of the alias group that holds
    the whole key (``lj`` and ``ljspeech:LJ``), or that holds its prefix, with the rest kept
    (``libritts:1089`` and ``librispeech:1089`` are one reader)."""
    prefix, sep, rest = speaker.partition(":")
    for group in aliases:
        if speaker in group:
            return group[0]
        if sep and prefix in group:
            return f"{group[0]}:{rest}"
    return speaker


def assign_splits(pieces: Sequence[Piece], config: BuildConfig) -> None:
    """dev for the groups (family / speaker) whose stable hash falls under ``dev_share``; a bona
    fide speaker that ``config.follow_splits`` names (after aliasing) takes that split instead,
    dev where it names both, so no one speaks in one corpus's dev and the other's train."""
    fixed: dict[str, str] = {}
    for speaker, split in config.follow_splits:
        key = split_speaker(speaker, config.speaker_aliases)
        fixed[key] = "dev" if "dev" in (split, fixed.get(key)) else split
    for p in pieces:
        if p.labels.label == "spoof":
            key = p.group
        else:
            key = split_speaker(p.group, config.speaker_aliases)
            if key in fixed:
                p.split = fixed[key]
                continue
        p.split = "dev" if stable_fraction(config.seed, f"group:{key}") < config.dev_share else "train"
