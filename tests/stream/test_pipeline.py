from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import LimitExceededError, ProtocolError
from spoofwatch.events import AlarmEvent, Event, ScoreEvent, StatusEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)


async def _collect(
    pipeline: Pipeline, stream: str, audio: np.ndarray, rate: int = 16000, chunk: int = 1600
) -> list[Event]:
    sub = pipeline.hub.subscribe(stream, maxsize=10000)
    handle = pipeline.open_stream(stream, source="test", sample_rate=rate)
    for start in range(0, len(audio), chunk):
        await handle.feed_wait(audio[start : start + chunk])
    await handle.close()
    events: list[Event] = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


async def _with_pipeline(scorer: FakeScorer, body, engine: EngineConfig | None = None):  # type: ignore[no-untyped-def]
    pipeline = Pipeline(scorer, CFG, engine or EngineConfig(max_batch=4, max_wait_ms=5))
    worker = asyncio.create_task(pipeline.run(), name="worker")
    try:
        return await body(pipeline)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker


def test_alarm_turns_on_after_switch_to_tone_and_not_before() -> None:
    scorer = FakeScorer()
    audio = np.concatenate([noise(4.0), tone(4.0)])
    events = asyncio.run(_with_pipeline(scorer, lambda p: _collect(p, "call-1", audio)))
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    alarms = [e for e in events if isinstance(e, AlarmEvent)]
    assert isinstance(events[0], StreamEvent) and events[0].state == "start"
    assert isinstance(events[-1], StreamEvent) and events[-1].state == "end"
    assert [s.seq for s in scores] == list(range(len(scores)))
    assert len(scores) == 15  # (8 s - 1 s) / 0.5 s + 1
    assert alarms and alarms[0].state == "on"
    assert 4.0 < alarms[0].t <= 6.0
    assert all(s.p_spoof < 0.5 for s in scores if s.t_end <= 4.0)
    assert "spoofwatch-infer" in next(iter(scorer.thread_names))
    assert max(scorer.calls) > 1  # windows were batched


def test_resamples_8k_input_to_model_rate() -> None:
    scorer = FakeScorer()
    audio = noise(3.0, sample_rate=8000)
    events = asyncio.run(_with_pipeline(scorer, lambda p: _collect(p, "tel", audio, rate=8000, chunk=160)))
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert [round(s.t_end, 3) for s in scores] == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_admission_limit_and_duplicate_ids_are_refused() -> None:
    async def body(pipeline: Pipeline) -> None:
        pipeline.open_stream("a", source="t", sample_rate=16000)
        with pytest.raises(ProtocolError, match="already live"):
            pipeline.open_stream("a", source="t", sample_rate=16000)
        pipeline.open_stream("b", source="t", sample_rate=16000)
        with pytest.raises(LimitExceededError, match="limit of 2"):
            pipeline.open_stream("c", source="t", sample_rate=16000)
        status = pipeline.status()
        assert isinstance(status, StatusEvent) and status.streams == 2
        await pipeline.close_all()
        assert not pipeline.streams

    asyncio.run(_with_pipeline(FakeScorer(), body, EngineConfig(max_streams=2)))


def test_live_feed_drops_oldest_windows_when_engine_is_saturated() -> None:
    async def body(pipeline: Pipeline) -> tuple[int, int]:
        sub = pipeline.hub.subscribe("s", maxsize=10000)
        handle = pipeline.open_stream("s", source="t", sample_rate=16000)
        handle.feed(noise(12.0))  # 23 windows at once into a queue of 4
        await handle.close()
        scored = sum(isinstance(e, ScoreEvent) for e in list(sub.queue._queue))  # type: ignore[attr-defined]
        return scored, handle.session.counters.windows_dropped

    scored, dropped = asyncio.run(
        _with_pipeline(
            FakeScorer(delay_s=0.01), body, EngineConfig(max_batch=2, max_wait_ms=0, queue_windows=4)
        )
    )
    assert dropped > 0
    assert scored + dropped == 23


def test_slow_subscriber_is_dropped_without_stalling_others() -> None:
    async def body(pipeline: Pipeline) -> tuple[bool, int]:
        slow = pipeline.hub.subscribe(None, maxsize=2, name="slow")
        events = await _collect(pipeline, "x", noise(4.0))
        return slow.overflowed, sum(isinstance(e, ScoreEvent) for e in events)

    overflowed, n_scores = asyncio.run(_with_pipeline(FakeScorer(), body))
    assert overflowed
    assert n_scores == 7


def test_unset_alarm_thresholds_follow_the_detectors_threshold_policy() -> None:
    """A card chosen for few false alarms (high p_spoof threshold) also makes the streaming
    alarm stricter; a threshold set in the config still wins."""
    audio = np.concatenate([noise(2.0), tone(4.0)])  # the tone scores p_spoof about 0.92

    def alarms(scorer: FakeScorer, config: StreamConfig) -> list[AlarmEvent]:
        async def body() -> list[Event]:
            pipeline = Pipeline(scorer, config, EngineConfig(max_batch=4, max_wait_ms=5))
            assert pipeline.stream_config.alarm_on == config.alarm_levels(scorer.threshold)[0]
            worker = asyncio.create_task(pipeline.run())
            try:
                return await _collect(pipeline, "s", audio)
            finally:
                worker.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await worker

        return [e for e in asyncio.run(body()) if isinstance(e, AlarmEvent)]

    assert CFG.alarm_on is None and CFG.alarm_levels(0.95) == pytest.approx((0.95, 0.665))
    assert alarms(FakeScorer(threshold=0.5), CFG)
    assert alarms(FakeScorer(threshold=0.95), CFG) == []
    explicit = StreamConfig(
        window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2, alarm_on=0.6, alarm_off=0.4
    )
    assert alarms(FakeScorer(threshold=0.95), explicit)
