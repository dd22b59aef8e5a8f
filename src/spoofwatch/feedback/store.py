"""Analyst feedback on disk: one SQLite file, ``feedback.sqlite`` in ``--feedback-dir``.

Schema version 1 (``PRAGMA user_version``): table ``feedback`` holds one verdict (label,
stream metadata, the card serving when it was given, the time range, note); table
``windows`` the marked windows, each with the card that scored it, its calibrated score
and its pooled features as little-endian float32 bytes (``dim`` of them; ``dtype`` says
so, ``<f4``: float16 rounding was measured to move the packaged card's scores by up to
0.45 LLR, too much to retrain on). No audio is
stored. Writes run in a worker thread, each on its own connection (WAL), so the event
loop never waits on the disk; ``read_feedback`` is what ``spoofwatch retrain`` reads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, DataError

DB_FILE = "feedback.sqlite"
SCHEMA_VERSION = 1
FEATURE_DTYPE = "<f4"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,        -- unix time
    via TEXT NOT NULL,                -- rest, mqtt, dashboard
    node TEXT NOT NULL,
    stream TEXT NOT NULL,
    stream_source TEXT NOT NULL,
    stream_sample_rate INTEGER NOT NULL,
    stream_live INTEGER NOT NULL,
    label TEXT NOT NULL,              -- confirmed_synthetic, false_alarm, missed_synthetic
    t_start REAL,                     -- stream clock, seconds; NULL: from the first kept window
    t_end REAL,
    alarm_t REAL,                     -- the alarm it names, if any
    note TEXT NOT NULL,
    analyst TEXT,
    detector TEXT NOT NULL,           -- the card serving when the feedback came
    detector_version TEXT,
    detector_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    feedback_id INTEGER NOT NULL REFERENCES feedback(id),
    seq INTEGER NOT NULL,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    score REAL NOT NULL,              -- calibrated LLR, higher = bona fide
    speech INTEGER NOT NULL,
    detector TEXT,                    -- the card that scored this window
    detector_sha TEXT,
    dim INTEGER NOT NULL,
    dtype TEXT NOT NULL,              -- numpy dtype of the blob: <f4
    features BLOB NOT NULL,           -- dim values of dtype
    PRIMARY KEY (feedback_id, seq)
);
"""


@dataclass(frozen=True)
class WindowRow:
    seq: int
    t_start: float
    t_end: float
    score: float
    speech: bool
    detector: str | None
    detector_sha: str | None
    features: NDArray[np.float32]


@dataclass(frozen=True)
class FeedbackRow:
    via: str
    node: str
    stream: str
    stream_source: str
    stream_sample_rate: int
    stream_live: bool
    label: str
    t_start: float | None
    t_end: float | None
    alarm_t: float | None
    note: str
    analyst: str | None
    detector: str
    detector_version: str | None
    detector_sha256: str
    windows: tuple[WindowRow, ...]
    id: int | None = None
    received_at: float | None = None


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30.0)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[sqlite3.Connection]:
    connection = _connect(path)
    try:
        yield connection
    finally:
        connection.close()


class FeedbackStore:
    """Creates (or checks) the database at construction, so a bad directory fails at start-up."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with _opened(self.path) as connection:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise ConfigError(
                        f"{self.path}: expected feedback schema version {SCHEMA_VERSION}, found {version}"
                    )
                with connection:
                    connection.executescript(_SCHEMA)
                    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"feedback_dir {self.directory}: cannot open {DB_FILE} there ({exc})") from None

    @property
    def path(self) -> Path:
        return self.directory / DB_FILE

    def add(self, row: FeedbackRow) -> int:
        """Store one verdict and its windows (one transaction); its id."""
        with _opened(self.path) as connection, connection:
            cursor = connection.execute(
                "INSERT INTO feedback (received_at, via, node, stream, stream_source, stream_sample_rate,"
                " stream_live, label, t_start, t_end, alarm_t, note, analyst, detector, detector_version,"
                " detector_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    row.via,
                    row.node,
                    row.stream,
                    row.stream_source,
                    row.stream_sample_rate,
                    int(row.stream_live),
                    row.label,
                    row.t_start,
                    row.t_end,
                    row.alarm_t,
                    row.note,
                    row.analyst,
                    row.detector,
                    row.detector_version,
                    row.detector_sha256,
                ),
            )
            feedback_id = cursor.lastrowid
            assert feedback_id is not None
            connection.executemany(
                "INSERT INTO windows (feedback_id, seq, t_start, t_end, score, speech, detector,"
                " detector_sha, dim, dtype, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        feedback_id,
                        w.seq,
                        w.t_start,
                        w.t_end,
                        w.score,
                        int(w.speech),
                        w.detector,
                        w.detector_sha,
                        int(w.features.size),
                        FEATURE_DTYPE,
                        np.asarray(w.features, dtype=FEATURE_DTYPE).tobytes(),
                    )
                    for w in row.windows
                ],
            )
        return feedback_id


def read_feedback(directory: str | Path) -> list[FeedbackRow]:
    """Every stored verdict with its windows, oldest first (what retraining reads)."""
    path = Path(directory) / DB_FILE
    if not path.is_file():
        raise DataError(f"{directory}: expected a feedback directory with {DB_FILE} in it, found none")
    with _opened(path) as connection:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise DataError(f"{path}: expected feedback schema version {SCHEMA_VERSION}, found {version}")
        columns = (
            "id, received_at, via, node, stream, stream_source, stream_sample_rate, stream_live, label,"
            " t_start, t_end, alarm_t, note, analyst, detector, detector_version, detector_sha256"
        )
        rows = connection.execute(f"SELECT {columns} FROM feedback ORDER BY id").fetchall()
        out = []
        for r in rows:
            windows = tuple(
                WindowRow(
                    seq,
                    t0,
                    t1,
                    score,
                    bool(speech),
                    det,
                    sha,
                    np.frombuffer(blob, dtype=np.dtype(dtype), count=dim).astype(np.float32),
                )
                for seq, t0, t1, score, speech, det, sha, dim, dtype, blob in connection.execute(
                    "SELECT seq, t_start, t_end, score, speech, detector, detector_sha, dim, dtype, features"
                    " FROM windows WHERE feedback_id = ? ORDER BY seq",
                    (r[0],),
                )
            )
            out.append(
                FeedbackRow(
                    via=r[2],
                    node=r[3],
                    stream=r[4],
                    stream_source=r[5],
                    stream_sample_rate=r[6],
                    stream_live=bool(r[7]),
                    label=r[8],
                    t_start=r[9],
                    t_end=r[10],
                    alarm_t=r[11],
                    note=r[12],
                    analyst=r[13],
                    detector=r[14],
                    detector_version=r[15],
                    detector_sha256=r[16],
                    windows=windows,
                    id=r[0],
                    received_at=r[1],
                )
            )
    return out
