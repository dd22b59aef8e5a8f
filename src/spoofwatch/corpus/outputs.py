"""The build's tables: manifest.csv, lock.csv and skips.csv (sorted, no timestamps)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from spoofwatch.corpus.records import Piece, Skip

# The schema of ../shared/corpus/manifest.csv, then the builder's own columns.
MANIFEST_COLUMNS = (
    "path", "utt_id", "label", "split", "system", "family", "speaker", "corpus", "lang", "orig_sr",
    "duration_s", "source", "license", "generator", "group", "seg_start_s", "staging_file", "sha1_orig",
    "origin", "year", "kind", "zero_shot", "streaming", "tags", "evidence", "card", "pcm_sha1",
)  # fmt: skip
LOCK_COLUMNS = (
    "utt_id", "card", "origin", "path", "sha1_orig", "seg_start_s", "duration_s", "label", "system",
    "speaker",
)  # fmt: skip
SKIP_COLUMNS = ("card", "path", "reason", "detail", "seconds")


def audio_path(piece: Piece) -> str:
    return f"audio/{piece.card}/{piece.utt_id}.flac"


def manifest_row(p: Piece) -> dict[str, str]:
    lab = p.labels
    return {
        "path": audio_path(p),
        "utt_id": p.utt_id,
        "label": lab.label,
        "split": p.split,
        "system": lab.system.replace(" ", "_") if lab.label == "spoof" else "-",
        "family": lab.family,
        "speaker": lab.speaker,
        "corpus": lab.corpus,
        "lang": lab.lang,
        "orig_sr": str(p.orig_sr),
        "duration_s": f"{p.duration_s:.3f}",
        "source": p.card,
        "license": p.licence,
        "generator": lab.generator if lab.label == "spoof" else "",
        "group": p.group,
        "seg_start_s": f"{p.seg_start_s:.3f}",
        "staging_file": p.path,
        "sha1_orig": p.sha1_orig,
        "origin": p.origin,
        "year": "" if lab.year is None else str(lab.year),
        "kind": lab.kind if lab.label == "spoof" else "",
        "zero_shot": str(lab.zero_shot).lower() if lab.label == "spoof" else "",
        "streaming": str(lab.streaming).lower() if lab.label == "spoof" else "",
        "tags": ";".join(lab.tags),
        "evidence": lab.evidence,
        "card": p.card,
        "pcm_sha1": p.pcm_sha1,
    }


def lock_row(p: Piece) -> dict[str, str]:
    row = manifest_row(p)
    row["path"] = p.path
    return {c: row.get(c, "") for c in LOCK_COLUMNS} | {"card": p.card}


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def manifest_text(pieces: Sequence[Piece]) -> str:
    return _csv_text(MANIFEST_COLUMNS, [manifest_row(p) for p in sorted(pieces, key=lambda p: p.order)])


def lock_text(pieces: Sequence[Piece]) -> str:
    return _csv_text(LOCK_COLUMNS, [lock_row(p) for p in sorted(pieces, key=lambda p: p.order)])


def skips_text(skips: Sequence[Skip]) -> str:
    rows = [
        {
            "card": s.card,
            "path": s.path,
            "reason": s.reason,
            "detail": s.detail,
            "seconds": f"{s.seconds:.3f}",
        }
        for s in sorted(skips, key=lambda s: (s.card, s.path, s.reason, s.detail))
    ]
    return _csv_text(SKIP_COLUMNS, rows)


def read_skips(path: Path) -> list[Skip]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Skip(r["card"], r["path"], r["reason"], r["detail"], float(r["seconds"] or 0))
            for r in csv.DictReader(handle)
        ]


def write_text(path: Path, text: str) -> None:
    """Write only when the content changed (a rebuild leaves identical files untouched)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
