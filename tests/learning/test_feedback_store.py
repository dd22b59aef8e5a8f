"""The feedback store: round trip, schema checks and refusals of bad input."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from spoofwatch.errors import DataError
from spoofwatch.learning.feedback_store import (
    DB_FILE,
    FeedbackRecord,
    FeedbackStore,
    is_bonafide_label,
    read_feedback,
)


def _record(label: str = "false_alarm", windows: int = 3, dim: int = 8, seed: int = 0) -> FeedbackRecord:
    rng = np.random.default_rng(seed)
    return FeedbackRecord(
        stream_id="call-1",
        label=label,
        features=rng.normal(size=(windows, dim)).astype(np.float32),
        detector_name="det",
        detector_sha256="ab" * 32,
        t_start=1.0,
        t_end=6.0,
        note="agent says caller is real",
        metadata={"from": "+4412345", "alarm_id": 7},
        feature_space="cd" * 32,
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    written = [_record(seed=1), _record("confirmed_synthetic", windows=1, seed=2)]
    with FeedbackStore(tmp_path) as store:
        ids = [store.add(r) for r in written]
        assert store.count() == 2
    read = read_feedback(tmp_path)
    assert [r.id for r in read] == ids
    for want, got in zip(written, read, strict=True):
        np.testing.assert_array_equal(got.features, want.features.astype(np.float16).astype(np.float32))
        assert (got.label, got.stream_id, got.note, got.metadata) == (
            want.label,
            want.stream_id,
            want.note,
            want.metadata,
        )
        assert (got.detector_name, got.detector_sha256, got.feature_space) == ("det", "ab" * 32, "cd" * 32)
        assert (got.t_start, got.t_end, got.dim) == (1.0, 6.0, 8)
        assert got.created_at is not None
    assert [r.id for r in read_feedback(tmp_path, ids=[ids[1]])] == [ids[1]]
    assert read_feedback(tmp_path, ids=[]) == []


def test_labels_map_to_classes() -> None:
    assert is_bonafide_label("false_alarm")
    assert not is_bonafide_label("confirmed_synthetic")
    assert not is_bonafide_label("missed_synthetic")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "maybe"}, "expected one of"),
        ({"features": np.zeros((0, 4), np.float32)}, "expected \\(windows"),
        ({"features": np.full((2, 4), np.nan, np.float32)}, "finite"),
        ({"stream_id": ""}, "stream_id"),
        ({"t_start": 5.0, "t_end": 1.0}, "t_end >= t_start"),
        ({"metadata": {"x": object()}}, "JSON"),
    ],
)
def test_bad_records_are_refused(tmp_path: Path, change: dict[str, object], message: str) -> None:
    from dataclasses import replace

    with FeedbackStore(tmp_path) as store, pytest.raises(DataError, match=message):
        store.add(replace(_record(), **change))  # type: ignore[arg-type]


def test_reader_refuses_a_directory_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected a feedback store"):
        read_feedback(tmp_path)


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    FeedbackStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(DataError, match="schema version 1, found 99"):
        FeedbackStore(tmp_path)


def test_writes_from_several_threads_all_land(tmp_path: Path) -> None:
    with FeedbackStore(tmp_path) as store:
        threads = [threading.Thread(target=lambda i=i: store.add(_record(seed=i))) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(read_feedback(tmp_path)) == 8
