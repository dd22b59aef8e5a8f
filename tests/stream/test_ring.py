"""Tests of the absolute-indexed ring buffer against a plain array holding the whole stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofwatch.errors import AudioError, ConfigError, LimitExceededError
from spoofwatch.stream.core.ring import DropPolicy, RingBuffer


def _stream(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_policy_is_overwrite_oldest() -> None:
    assert RingBuffer(4).drop_policy is DropPolicy.OVERWRITE_OLDEST


def test_reads_back_what_was_written_before_wrapping() -> None:
    ring = RingBuffer(8)
    audio = _stream(5)
    assert ring.write(audio) == 0
    assert (ring.first_index, ring.end_index, len(ring)) == (0, 5, 5)
    np.testing.assert_array_equal(ring.read(0, 5), audio)
    np.testing.assert_array_equal(ring.read(2, 4), audio[2:4])
    assert ring.read(3, 3).shape == (0,)


def test_wrapping_overwrites_oldest_and_counts_drops() -> None:
    ring = RingBuffer(8)
    audio = _stream(13)
    assert ring.write(audio[:6]) == 0
    assert ring.write(audio[6:13]) == 5
    assert (ring.first_index, ring.end_index, ring.dropped_samples) == (5, 13, 5)
    np.testing.assert_array_equal(ring.read(5, 13), audio[5:13])


def test_write_larger_than_capacity_keeps_only_the_newest() -> None:
    ring = RingBuffer(8)
    audio = _stream(30)
    ring.write(audio[:3])
    assert ring.write(audio[3:]) == 30 - 8
    assert ring.first_index == 22
    np.testing.assert_array_equal(ring.read(22, 30), audio[22:])


def test_read_returns_a_copy() -> None:
    ring = RingBuffer(4)
    ring.write(np.ones(4, dtype=np.float32))
    out = ring.read(0, 4)
    out[:] = 7.0
    np.testing.assert_array_equal(ring.read(0, 4), np.ones(4, dtype=np.float32))


def test_read_of_overwritten_range_raises_limit_error() -> None:
    ring = RingBuffer(4)
    ring.write(_stream(10))
    with pytest.raises(LimitExceededError, match=r"first_index 6"):
        ring.read(5, 8)


@pytest.mark.parametrize(("start", "stop"), [(3, 11), (12, 14), (5, 4)])
def test_read_of_unwritten_or_inverted_range_raises_value_error(start: int, stop: int) -> None:
    ring = RingBuffer(8)
    ring.write(_stream(10))
    with pytest.raises(ValueError, match=rf"\[{start}, {stop}\)"):
        ring.read(start, stop)


def test_reset_restarts_indices_and_counters() -> None:
    ring = RingBuffer(4)
    ring.write(_stream(10))
    ring.reset()
    assert (ring.first_index, ring.end_index, ring.dropped_samples) == (0, 0, 0)
    audio = _stream(3, seed=1)
    ring.write(audio)
    np.testing.assert_array_equal(ring.read(0, 3), audio)


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True])
def test_bad_capacity_is_a_config_error(capacity: object) -> None:
    with pytest.raises(ConfigError, match="capacity"):
        RingBuffer(capacity)  # type: ignore[arg-type]


def test_two_dimensional_write_is_an_audio_error() -> None:
    with pytest.raises(AudioError, match=r"1-D.*\(2, 3\)"):
        RingBuffer(8).write(np.zeros((2, 3), dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 20),
    sizes=st.lists(st.integers(0, 45), max_size=12),
    data=st.data(),
)
def test_any_writes_match_the_tail_of_the_whole_stream(
    capacity: int, sizes: list[int], data: st.DataObject
) -> None:
    total = sum(sizes)
    audio = _stream(total, seed=total)
    ring = RingBuffer(capacity)
    dropped, pos = 0, 0
    for size in sizes:
        dropped += ring.write(audio[pos : pos + size])
        pos += size
    first = max(0, total - capacity)
    assert (ring.first_index, ring.end_index) == (first, total)
    assert ring.dropped_samples == dropped == first
    start = data.draw(st.integers(first, total))
    stop = data.draw(st.integers(start, total))
    np.testing.assert_array_equal(ring.read(start, stop), audio[start:stop])
