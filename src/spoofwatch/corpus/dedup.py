"""Exact and near duplicates across all sources, keeping one copy deterministically.

Preference: the highest original sample rate, then card id, path and offset. Exact duplicates
(same 16-bit PCM after resampling) go whatever their labels. Near copies (``nearcopy``) go only
between clips of different cards with the same label, spoofs also of the same generator family:
re-hosting is one page taking another's samples. Inside one card the envelope test cannot tell a
copy from different material: one speaker saying "Say the word ..." two hundred times, forty
speakers saying one wake word, one codec at four bitrates in four columns; identical files inside
a card are still caught as exact duplicates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from spoofwatch.corpus.nearcopy import find_near_copies
from spoofwatch.corpus.records import Piece, Skip


def preference(piece: Piece) -> tuple[int, str, str, int]:
    return (-piece.orig_sr, piece.card, piece.path, piece.start)


def same_material(a: Piece, b: Piece) -> bool:
    """Whether two near-identical clips are copies of one another (see the module docstring)."""
    if a.card == b.card or a.labels.label != b.labels.label:
        return False
    return a.labels.label == "bonafide" or a.labels.family == b.labels.family


def remove_duplicates(
    pieces: Sequence[Piece], threshold: float, min_s: float = 0.0
) -> tuple[list[Piece], list[Skip]]:
    """Exact duplicates among all pieces; near copies among pieces of at least ``min_s`` seconds."""
    ordered = sorted(pieces, key=preference)
    skips: list[Skip] = []
    seen_pcm: dict[str, Piece] = {}
    unique: list[Piece] = []
    for piece in ordered:
        first = seen_pcm.get(piece.pcm_sha1)
        if first is not None:
            skips.append(_skip(piece, "exact duplicate (same PCM)", first))
            continue
        seen_pcm[piece.pcm_sha1] = piece
        unique.append(piece)
    long = [i for i, p in enumerate(unique) if p.duration_s >= min_s]
    matches = find_near_copies(
        [unique[i].envelope for i in long],
        [unique[i].duration_s for i in long],
        [unique[i].envelope for i in long],
        [unique[i].duration_s for i in long],
        threshold=threshold,
        same_set=True,
    )
    neighbours: dict[int, list[int]] = defaultdict(list)
    for m in matches:
        a, b = long[m.query], long[m.reference]
        if same_material(unique[a], unique[b]):
            neighbours[a].append(b)
            neighbours[b].append(a)
    kept: list[Piece] = []
    kept_index: set[int] = set()
    for i, piece in enumerate(unique):  # already in preference order
        copy_of = next((j for j in neighbours.get(i, ()) if j in kept_index), None)
        if copy_of is not None:
            skips.append(_skip(piece, "near duplicate", unique[copy_of]))
            continue
        kept_index.add(i)
        kept.append(piece)
    return sorted(kept, key=lambda p: p.order), skips


def _skip(piece: Piece, reason: str, kept: Piece) -> Skip:
    return Skip(
        piece.card,
        piece.path,
        reason,
        f"of {kept.card}:{kept.path}@{kept.seg_start_s:.2f}s",
        piece.duration_s,
    )
