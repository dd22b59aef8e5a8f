"""The feedback store: analysts' verdicts with the pooled features of the windows they cover.

One SQLite file, ``feedback.sqlite3``, in the feedback directory (``--feedback-dir``). The
server writes it (``FeedbackStore.add``); ``spoofwatch retrain`` and ``canary`` read it
(``read_feedback``). No audio is stored: a row holds the head input of each window (what
``Detector.features`` gives), so a new head can be fitted without the calls' audio.

Schema (version 1)::

    CREATE TABLE schema_version (version INTEGER NOT NULL);
    CREATE TABLE feedback (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at      TEXT NOT NULL,     -- ISO 8601 UTC, e.g. 2026-12-06T05:01:02+00:00
        stream_id       TEXT NOT NULL,
        label           TEXT NOT NULL CHECK (label IN
                            ('confirmed_synthetic', 'false_alarm', 'missed_synthetic')),
        note            TEXT NOT NULL DEFAULT '',
        detector_name   TEXT NOT NULL,     -- the card that scored the windows
        detector_sha256 TEXT NOT NULL,     -- model.identity.card_identity(...).sha256
        feature_space   TEXT,              -- model.identity.feature_space(card); NULL = unknown
        t_start         REAL NOT NULL,     -- stream seconds of the first window's start
        t_end           REAL NOT NULL,     -- and of the last window's end
        dim             INTEGER NOT NULL,  -- features per window
        window_count    INTEGER NOT NULL,
        features        BLOB NOT NULL,     -- float16 little-endian, row-major (window_count, dim)
        metadata        TEXT NOT NULL DEFAULT '{}'  -- JSON object: stream metadata, alarm id, ...
    );

Labels: ``confirmed_synthetic`` (an alarm was right) and ``missed_synthetic`` (synthetic
speech the detector let through) are spoof; ``false_alarm`` is bona fide.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import DataError

DB_FILE: Final = "feedback.sqlite3"
SCHEMA_VERSION: Final = 1
CONFIRMED_SYNTHETIC: Final = "confirmed_synthetic"
FALSE_ALARM: Final = "false_alarm"
MISSED_SYNTHETIC: Final = "missed_synthetic"
LABELS: Final = (CONFIRMED_SYNTHETIC, FALSE_ALARM, MISSED_SYNTHETIC)

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    label           TEXT NOT NULL CHECK (label IN {LABELS!r}),
    note            TEXT NOT NULL DEFAULT '',
    detector_name   TEXT NOT NULL,
    detector_sha256 TEXT NOT NULL,
    feature_space   TEXT,
    t_start         REAL NOT NULL,
    t_end           REAL NOT NULL,
    dim             INTEGER NOT NULL,
    window_count    INTEGER NOT NULL,
    features        BLOB NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{{}}'
);
"""
_COLUMNS: Final = (
    "id, created_at, stream_id, label, note, detector_name, detector_sha256, feature_space, "
    "t_start, t_end, dim, window_count, features, metadata"
)


def is_bonafide_label(label: str) -> bool:
    """True for ``false_alarm`` (the audio was genuine), False for the two synthetic labels."""
    check_label(label)
    return label == FALSE_ALARM


def check_label(label: str) -> str:
    if label not in LABELS:
        raise DataError(f"feedback label {label!r}: expected one of {', '.join(LABELS)}")
    return label


@dataclass(frozen=True)
class FeedbackRecord:
    """One verdict on a stretch of one stream. ``features``: (windows, dim) head inputs.
    ``id`` and ``created_at`` are set by the store (None on a record not yet added)."""

    stream_id: str
    label: str
    features: NDArray[np.float32]
    detector_name: str
    detector_sha256: str
    t_start: float
    t_end: float
    note: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    feature_space: str | None = None
    id: int | None = None
    created_at: str | None = None

    @property
    def is_bonafide(self) -> bool:
        return is_bonafide_label(self.label)

    @property
    def window_count(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _check(record: FeedbackRecord) -> NDArray[np.float16]:
    check_label(record.label)
    if not record.stream_id:
        raise DataError("feedback: expected a stream_id, found an empty one")
    features = np.asarray(record.features)
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise DataError(f"feedback features: expected (windows >= 1, dim >= 1), found shape {features.shape}")
    if not np.isfinite(features).all():
        raise DataError("feedback features: expected finite values, found NaN or Inf")
    if not record.t_end >= record.t_start:
        raise DataError(f"feedback: expected t_end >= t_start, found {record.t_start} .. {record.t_end}")
    return features.astype("<f2")


class FeedbackStore:
    """The store in ``directory`` (created with its schema if new), safe to share between
    threads; close it (or use it as a context manager) when done."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"feedback directory {self.directory}: cannot create it ({exc.strerror})"
            ) from None
        self.path = self.directory / DB_FILE
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        if row is not None and row[0] != SCHEMA_VERSION:
            self._db.close()
            raise DataError(f"{self.path}: expected feedback schema version {SCHEMA_VERSION}, found {row[0]}")

    def add(self, record: FeedbackRecord) -> int:
        """Store ``record``; returns its id."""
        features = _check(record)
        created = record.created_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        try:
            metadata = json.dumps(record.metadata, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise DataError(f"feedback metadata: expected a JSON-serialisable object ({exc})") from None
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO feedback (created_at, stream_id, label, note, detector_name, detector_sha256, "
                "feature_space, t_start, t_end, dim, window_count, features, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    created,
                    record.stream_id,
                    record.label,
                    record.note,
                    record.detector_name,
                    record.detector_sha256,
                    record.feature_space,
                    float(record.t_start),
                    float(record.t_end),
                    int(features.shape[1]),
                    int(features.shape[0]),
                    features.tobytes(),
                    metadata,
                ),
            )
            return int(cursor.lastrowid or 0)

    def records(self, ids: Iterable[int] | None = None) -> list[FeedbackRecord]:
        """Every record (or those with ``ids``), oldest first."""
        with self._lock:
            return _select(self._db, self.path, ids)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open the feedback database ({exc})") from None
    return db


def _select(db: sqlite3.Connection, path: Path, ids: Iterable[int] | None) -> list[FeedbackRecord]:
    query = f"SELECT {_COLUMNS} FROM feedback"
    wanted: Sequence[int] | None = None if ids is None else sorted({int(i) for i in ids})
    if wanted is not None:
        query += f" WHERE id IN ({', '.join('?' * len(wanted))})" if wanted else " WHERE 0"
    try:
        rows = db.execute(query + " ORDER BY id", tuple(wanted or ())).fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot read the feedback table ({exc})") from None
    return [_record(row, path) for row in rows]


def _record(row: tuple[Any, ...], path: Path) -> FeedbackRecord:
    (ident, created, stream, label, note, name, sha, space, t0, t1, dim, count, blob, meta) = row
    if len(blob) != 2 * dim * count:
        raise DataError(
            f"{path}: feedback {ident}: expected {count} x {dim} float16 features ({2 * dim * count} bytes), "
            f"found {len(blob)} bytes"
        )
    try:
        metadata = json.loads(meta)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: feedback {ident}: metadata is not JSON ({exc})") from None
    return FeedbackRecord(
        stream_id=stream,
        label=label,
        features=np.frombuffer(blob, dtype="<f2").reshape(count, dim).astype(np.float32),
        detector_name=name,
        detector_sha256=sha,
        t_start=float(t0),
        t_end=float(t1),
        note=note,
        metadata=metadata if isinstance(metadata, dict) else {"value": metadata},
        feature_space=space,
        id=int(ident),
        created_at=created,
    )


def read_feedback(
    directory: str | os.PathLike[str], ids: Iterable[int] | None = None
) -> list[FeedbackRecord]:
    """Every record in the store in ``directory`` (or those with ``ids``), oldest first;
    refuses a directory without a store rather than reading nothing."""
    path = Path(directory) / DB_FILE
    if not path.is_file():
        raise DataError(f"{directory}: expected a feedback store ({DB_FILE}) in it, found none")
    with FeedbackStore(directory) as store:
        return store.records(ids)
