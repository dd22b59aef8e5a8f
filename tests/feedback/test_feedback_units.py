"""Feedback messages and the bounded feature ring (the store is learning.feedback_store's)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spoofwatch.events import AlarmEvent, ScoreEvent
from spoofwatch.feedback.capture import FeatureRing
from spoofwatch.feedback.desk import FeedbackError, parse_feedback


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (["call"], "expected a JSON object with stream and label, found list"),
        ({"stream": "c", "label": "fake"}, "label: expected one of ['confirmed_synthetic', 'false_alarm'"),
        ({"label": "false_alarm"}, "stream: expected the id of a stream"),
        ({"stream": "c", "label": "false_alarm", "colour": 1}, "unknown field(s) ['colour']"),
        ({"stream": "c", "label": "false_alarm", "t_start": -1}, "t_start: expected seconds"),
        ({"stream": "c", "label": "false_alarm", "t_end": True}, "t_end: expected seconds"),
        ({"stream": "c", "label": "false_alarm", "t_start": 3, "t_end": 2}, "expected t_end > t_start"),
        ({"stream": "c", "label": "false_alarm", "t_start": 1, "alarm_t": 2}, "either alarm_t or a t_start"),
        ({"stream": "c", "label": "false_alarm", "note": "x" * 5000}, "note: expected a string of at most"),
        ({"stream": "c", "label": "false_alarm", "via": "fax"}, "via: expected one of"),
    ],
)
def test_bad_feedback_is_refused_saying_what_was_expected(message: Any, expected: str) -> None:
    with pytest.raises(FeedbackError) as caught:
        parse_feedback(message)
    assert expected in str(caught.value)
    assert caught.value.status == 400


def test_good_feedback_parses() -> None:
    parsed = parse_feedback({"stream": "c", "label": "missed_synthetic", "t_start": 1, "note": "tts"})
    assert (parsed.stream, parsed.label, parsed.t_start, parsed.t_end, parsed.note) == (
        "c",
        "missed_synthetic",
        1.0,
        None,
        "tts",
    )


def score(seq: int, stream: str = "s") -> ScoreEvent:
    return ScoreEvent(stream, seq, seq * 1.0, seq + 4.0, 0.5, 0.4, 0.4, True, 1.0, "card", "abc")


def features(value: float, dim: int = 100) -> np.ndarray:  # type: ignore[type-arg]
    return np.full(dim, value, dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ring_keeps_the_last_windows_per_stream() -> None:
    ring = FeatureRing(per_stream=3)
    for seq in range(5):
        ring.on_scored("s", "test", 8000, [score(seq)], features(seq + 0.1), None)
    kept = ring.get("s")
    assert kept is not None
    assert [w.seq for w in kept.windows] == [2, 3, 4]
    assert kept.windows[0].features.dtype == np.float32
    assert float(kept.windows[-1].features[0]) == pytest.approx(4.1)
    assert ring.nbytes == sum(w.nbytes for w in kept.windows) and ring.evicted_windows == 2


def test_ring_byte_cap_evicts_ended_streams_first_then_the_largest() -> None:
    one = score(0)
    ring = FeatureRing(per_stream=100, max_bytes=3 * (400 + 200) + 10)  # three windows of 100 float32
    ring.on_scored("ended", "test", 8000, [one], features(1))
    ring.end("ended", 5.0)
    ring.on_scored("live", "test", 8000, [score(0, "live")], features(2))
    ring.on_scored("live", "test", 8000, [score(1, "live")], features(2))
    assert ring.get("ended") is not None
    ring.on_scored("live", "test", 8000, [score(2, "live")], features(2))
    assert ring.get("ended") is None  # the ended stream went first
    ring.on_scored("other", "test", 8000, [score(0, "other")], features(3))
    live = ring.get("live")
    assert live is not None and [w.seq for w in live.windows] == [1, 2]
    assert ring.nbytes <= ring.max_bytes


def test_ended_streams_stay_for_late_feedback_then_go_and_their_id_can_be_reused() -> None:
    clock = Clock()
    ring = FeatureRing(keep_s=60.0, clock=clock)
    ring.on_scored("s", "test", 8000, [score(0), AlarmEvent("s", "on", 4.0, 0.9)], features(1))
    ring.end("s", 9.0)
    kept = ring.get("s")
    assert kept is not None and kept.alarms == [[4.0, 9.0]]  # an alarm on at the end closes there
    clock.now = 59.0
    assert ring.get("s") is not None
    ring.on_scored("s", "test", 16000, [score(0)], features(2))  # a new stream, same id
    kept = ring.get("s")
    assert kept is not None and kept.sample_rate == 16000 and kept.alarms == [] and len(kept.windows) == 1
    ring.end("s", 5.0)
    clock.now = 200.0
    assert ring.get("s") is None and ring.nbytes == 0
