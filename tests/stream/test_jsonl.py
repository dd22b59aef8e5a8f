"""JsonlSink: one parseable event per line, flushed as it goes, nothing lost at shutdown."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import AlarmEvent, ErrorEvent, GapEvent, ScoreEvent, StreamEvent, parse_event
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sinks.jsonl import JsonlSink

CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_pipeline_events_are_written_one_per_line_and_flushed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")  # appended to, never truncated

    async def body() -> list[str]:
        pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5))
        sink = JsonlSink(pipeline.hub, str(path), stream="call")
        other = JsonlSink(pipeline.hub, io.StringIO())
        tasks = [asyncio.create_task(t) for t in (pipeline.run(), sink.run(), other.run())]
        handle = pipeline.open_stream("call", source="test", sample_rate=16000)
        pipeline.open_stream("ignored", source="test", sample_rate=16000)
        audio = np.concatenate([noise(3.0), tone(4.0)])
        for start in range(0, len(audio), 1600):
            await handle.feed_wait(audio[start : start + 1600])
        await handle.close()
        await until(lambda: sink.written == 2 + 13 + 2)  # start, scores, alarm on/off, end
        lines = path.read_text().splitlines()  # read while the sink still holds the file open
        for task in tasks:
            await stop(task)
        assert sink.dropped == 0
        return lines

    lines = asyncio.run(body(), debug=True)
    events = [parse_event(line) for line in lines]
    assert all(getattr(e, "stream", None) == "call" for e in events)
    assert isinstance(events[0], StreamEvent) and events[0].state == "start"
    assert isinstance(events[-1], StreamEvent) and events[-1].state == "end"
    assert [e.seq for e in events if isinstance(e, ScoreEvent)] == list(range(13))
    assert [e.state for e in events if isinstance(e, AlarmEvent)] == ["on", "off"]


def test_dash_means_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        hub = EventHub()
        sink = JsonlSink(hub, "-")
        task = asyncio.create_task(sink.run())
        hub.publish(ErrorEvent(stream=None, code="x", message="y"))
        await until(lambda: sink.written == 1)
        await stop(task)

    asyncio.run(body(), debug=True)
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    assert parse_event(out) == ErrorEvent(stream=None, code="x", message="y")


def test_events_queued_at_cancellation_are_still_written() -> None:
    async def body() -> str:
        hub = EventHub()
        buffer = io.StringIO()
        sink = JsonlSink(hub, buffer)
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(0)  # the sink now waits for events
        for i in range(3):
            hub.publish(AlarmEvent("s", "on", float(i), 0.9))
        await stop(task)  # cancelled before it could take them off the queue
        assert hub.subscriber_count == 0
        return buffer.getvalue()

    lines = asyncio.run(body(), debug=True).splitlines()
    assert [parse_event(line) for line in lines] == [AlarmEvent("s", "on", float(i), 0.9) for i in range(3)]


def test_unwritable_path_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "events.jsonl"

    async def body() -> None:
        await JsonlSink(EventHub(), str(target)).run()

    with pytest.raises(ConfigError, match=r"expected a writable JSON lines file.*missing-dir"):
        asyncio.run(body())


def test_gap_events_are_written_too(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"

    async def body() -> list[str]:
        pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5))
        sink = JsonlSink(pipeline.hub, str(path))
        tasks = [asyncio.create_task(t) for t in (pipeline.run(), sink.run())]
        handle = pipeline.open_stream("call", source="test", sample_rate=16000)
        await handle.feed_wait(noise(1.0))
        handle.gap(2.5, "discarded")
        await handle.close()
        await until(lambda: any('"gap"' in line for line in path.read_text().splitlines()))
        lines = path.read_text().splitlines()
        for task in tasks:
            await stop(task)
        return lines

    events = [parse_event(line) for line in asyncio.run(body(), debug=True)]
    assert GapEvent("call", 1.0, 3.5, "discarded") in events
