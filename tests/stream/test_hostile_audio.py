"""Edge-case audio through the real pipeline (FakeScorer): non-finite samples, clipping,
DC, silence, absurd levels, 1-sample and 1-hour streams, odd rates and channel counts,
and a scorer that returns NaN or fails. Nothing crashes the server or another stream."""

from __future__ import annotations

import asyncio
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import connect

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import AudioError
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, GapEvent, ScoreEvent, StreamEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from streamkit import (
    CFG,
    ENGINE,
    events_until_end,
    of_type,
    recv_event,
    run,
    s16,
    send_audio,
    serving,
    start_message,
)


def drain(sub: object) -> list[Event]:
    queue = sub.queue  # type: ignore[attr-defined]
    events: list[Event] = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def f32(audio: NDArray[np.float32]) -> bytes:
    return np.asarray(audio, dtype="<f4").tobytes()


def test_nan_and_inf_frames_are_refused_and_the_stream_survives() -> None:
    async def body() -> list[Event]:
        async with serving() as (server, _), connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
            await ws.send(start_message("nan", encoding="pcm_f32le"))
            good = noise(2.0, seed=4)
            poisoned = good[:1600].copy()
            poisoned[[3, 70]] = [np.nan, np.inf]
            await ws.send(f32(good[:16000]))
            await ws.send(f32(poisoned))
            await ws.send(f32(np.full(800, -np.inf, dtype=np.float32)))
            await ws.send(f32(good[16000:]))
            await ws.send('{"type":"stop"}')
            return await events_until_end(ws, "nan")

    events = run(body())
    errors = of_type(events, ErrorEvent)
    assert [e.code for e in errors] == ["audio_error", "audio_error"]
    assert "found 1 NaN and 1 infinite values among 1600" in errors[0].message
    assert "found 0 NaN and 800 infinite" in errors[1].message
    scores = of_type(events, ScoreEvent)
    # Refused frames left no trace: the stream is exactly the 2 s of good audio.
    assert [s.t_end for s in scores] == [1.0, 1.5, 2.0]
    assert all(np.isfinite([s.score, s.p_spoof, s.smoothed]).all() for s in scores)


def test_rejected_chunks_leave_the_stream_state_untouched() -> None:
    async def body() -> tuple[int, int, int]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        handle = pipeline.open_stream("x", source="test", sample_rate=8000)  # resampled
        reference = pipeline.open_stream("ref", source="test", sample_rate=8000)
        for stream in (handle, reference):
            stream.feed(noise(0.5, 8000))
        for bad in (
            np.array([0.1, np.nan], dtype=np.float32),
            np.array([1e300, 0.0]),  # float64 beyond float32: inf after the cast
            np.zeros((10, 2), dtype=np.float32),
        ):
            with pytest.raises(AudioError):
                handle.feed(bad)  # type: ignore[arg-type]
        for stream in (handle, reference):
            stream.feed(noise(0.5, 8000, seed=1))
        return handle.input_samples, handle.session.counters.samples_in, reference.session.counters.samples_in

    samples, resampled, reference = run(body())
    assert samples == 8000
    assert resampled == reference  # the resampler saw nothing of the refused chunks


LEVELS: dict[str, NDArray[np.float32]] = {
    "clipped": np.sign(tone(3.0, level=1.0)).astype(np.float32),  # a full-scale square wave
    "dc-offset": (0.9 + noise(3.0, level=0.05, seed=2)).astype(np.float32),
    "silence": np.zeros(48000, dtype=np.float32),
    "denormal": np.full(48000, 1e-40, dtype=np.float32),
    "absurd": (noise(3.0, seed=3) * 1e30).astype(np.float32),  # far past full scale
}


def test_extreme_levels_score_finite_and_do_not_disturb_a_normal_stream() -> None:
    async def body() -> tuple[list[Event], dict[str, int]]:
        pipeline = Pipeline(FakeScorer(), CFG, ENGINE)
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe(maxsize=10_000)
        handles = {name: pipeline.open_stream(name, source="test", sample_rate=16000) for name in LEVELS}
        normal = pipeline.open_stream("normal", source="test", sample_rate=16000)
        for start in range(0, 48000, 1600):
            for name, audio in LEVELS.items():
                handles[name].feed(audio[start : start + 1600])
            normal.feed(noise(3.0, seed=9)[start : start + 1600])
        await asyncio.gather(*(h.close() for h in [*handles.values(), normal]))
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        return drain(sub), {name: h.clipped_samples for name, h in handles.items()}

    events, clipped = run(body())
    assert not of_type(events, ErrorEvent)
    silent = ("silence", "denormal")  # digital silence is a gap, never scored (docs/protocol.md)
    for name in [*LEVELS, "normal"]:
        scores = [s for s in of_type(events, ScoreEvent) if s.stream == name]
        assert [s.t_end for s in scores] == ([] if name in silent else [1.0, 1.5, 2.0, 2.5, 3.0]), name
        assert all(np.isfinite([s.score, s.p_spoof, s.smoothed]).all() for s in scores), name
    for name in silent:
        assert [e for e in of_type(events, GapEvent) if e.stream == name] == [
            GapEvent(name, 0.0, 3.0, "silence")
        ]
    speech = {s.stream: s.speech for s in of_type(events, ScoreEvent)}
    assert speech["normal"] is True
    assert clipped["absurd"] == 48000 and clipped["clipped"] == 0 and clipped["silence"] == 0
    # Clipped to full scale, the absurd stream scores as full-scale noise of that shape would.
    absurd = [s.score for s in of_type(events, ScoreEvent) if s.stream == "absurd"]
    clipped_noise = np.clip(LEVELS["absurd"], -1.0, 1.0)
    expected = FakeScorer().score_windows(np.stack([clipped_noise[:16000], clipped_noise[8000:24000]]))
    assert absurd[:2] == pytest.approx(list(expected))


def test_one_sample_and_empty_streams_end_cleanly() -> None:
    async def body() -> tuple[list[Event], list[Event]]:
        async with serving() as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/v1/ingest"
            async with connect(url) as ws:
                await ws.send(start_message("one"))
                await ws.send(s16(np.array([0.5], dtype=np.float32)))
                await ws.send(b"")  # an empty frame is no audio, not an error
                await ws.send('{"type":"stop"}')
                one = await events_until_end(ws, "one")
                await ws.send(start_message("none"))
                await ws.send('{"type":"stop"}')
                empty = await events_until_end(ws, "none")
            assert not pipeline.streams
            return one, empty

    for events in run(body()):
        assert [type(e) for e in events] == [StreamEvent, StreamEvent]  # start, end: no score, no error


def test_an_hour_fed_fast_keeps_memory_bounded() -> None:
    """3600 s at 1 kHz in 0.5 s windows (7200), fed as fast as they are scored: memory
    held at 35 minutes and at 60 minutes is the same, and the ring never grows."""
    rate = 1000
    config = StreamConfig(window_s=0.5, hop_s=0.5, min_s=0.1, smoothing_n=4, alarm_min_on_s=1.0)
    engine = EngineConfig(max_batch=64, max_wait_ms=0, queue_windows=128, max_speed=0.0)  # fed at 1000x
    chunk_s = 20

    async def body() -> tuple[int, int, int, int]:
        pipeline = Pipeline(FakeScorer(sample_rate=rate, window_s=0.5), config, engine)
        worker = asyncio.create_task(pipeline.run())
        counter = pipeline.hub.subscribe(maxsize=64)  # a consumer that keeps up
        counted = 0

        async def consume() -> None:
            nonlocal counted
            while True:
                if isinstance(await counter.get(), ScoreEvent):
                    counted += 1

        consumer = asyncio.create_task(consume())
        handle = pipeline.open_stream("hour", source="test", sample_rate=rate)
        block = noise(chunk_s, rate, seed=1)

        async def settle() -> None:  # no window in flight, every event consumed
            while handle.pending or not counter.queue.empty():
                await asyncio.sleep(0.001)

        halfway = 0
        for k in range(3600 // chunk_s):
            if k == 30:  # after 10 minutes of warm-up
                await settle()
                tracemalloc.start()
            if k == 105:  # 35 minutes
                await settle()
                halfway = tracemalloc.get_traced_memory()[0]
            await handle.feed_wait(block)
        await settle()
        # What the last 25 minutes added and kept (the last batch's windows, held by the
        # worker until the next batch, are there at both points and cancel out).
        retained = tracemalloc.get_traced_memory()[0] - halfway
        tracemalloc.stop()
        ring = handle.session.windower._ring.capacity
        await handle.close()
        consumer.cancel()
        worker.cancel()
        await asyncio.gather(consumer, worker, return_exceptions=True)
        assert pipeline.batcher.counters.dropped == 0 and not pipeline.streams
        return counted, handle.session.counters.windows_scored, retained, ring

    # Without asyncio debug mode: it records a traceback per callback, which is the cost here.
    counted, scored, retained, ring = asyncio.run(body())
    assert scored == counted == 7200
    assert ring == 1000  # one window plus one hop, as at the start
    assert retained < 16 * 1024, f"{retained} bytes retained over 25 minutes of stream"


@pytest.mark.parametrize("rate,channels", [(8000, 1), (11025, 1), (22050, 2), (44100, 1), (48000, 2)])
def test_unusual_rates_and_channel_counts_score_on_the_input_timeline(rate: int, channels: int) -> None:
    async def body() -> list[Event]:
        async with serving() as (server, _), connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
            await ws.send(start_message("odd", sample_rate=rate, channels=channels))
            audio = noise(2.0, rate, seed=rate)
            frames = np.repeat(audio[:, None], channels, axis=1).reshape(-1)
            await send_audio(ws, frames, chunk=rate // 10 * channels)
            await ws.send('{"type":"stop"}')
            return await events_until_end(ws, "odd")

    events = run(body())
    assert events[0] == StreamEvent("odd", "start", rate, "ws_ingest")
    assert not of_type(events, ErrorEvent)
    assert [round(s.t_end, 3) for s in of_type(events, ScoreEvent)] == [1.0, 1.5, 2.0]


def test_bad_rates_and_channel_counts_are_refused_before_a_stream_opens() -> None:
    async def body() -> list[str]:
        async with serving() as (server, pipeline):
            messages = []
            for overrides in (
                {"sample_rate": 7999},
                {"sample_rate": 48001},
                {"sample_rate": 0},
                {"sample_rate": "16000"},
                {"sample_rate": 16000.5},
                {"channels": 3},
                {"channels": 0},
                {"channels": True},
            ):
                async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                    await ws.send(start_message("bad", **overrides))
                    error = await recv_event(ws)
                    assert isinstance(error, ErrorEvent) and error.code == "protocol_error"
                    messages.append(error.message)
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest") as ws:
                await ws.send(start_message("stereo", channels=2))
                await recv_event(ws)
                await ws.send(b"\x00\x00\x00")  # not a whole stereo frame
                error = await recv_event(ws)
                assert isinstance(error, ErrorEvent) and error.code == "audio_error"
                messages.append(error.message)
                for rate in (0, -8000, 10**9):
                    with pytest.raises(AudioError, match="sample rate"):
                        pipeline.open_stream(f"r{rate}", source="test", sample_rate=rate)
                assert list(pipeline.streams) == ["stereo"]  # while its connection is open
            return messages

    messages = run(body())
    assert "8000..48000 Hz, found 7999" in messages[0] and "found 48001" in messages[1]
    assert "expected integer 'sample_rate', found '16000'" in messages[3]
    assert "'channels' in 1..2, found 3" in messages[5]
    assert "expected integer 'channels', found True" in messages[7]
    assert "multiple of 4, found 3" in messages[8]


class FlakyScorer(FakeScorer):
    """Returns NaN/inf for windows whose first sample is exactly 0.25, and raises for 0.75."""

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        if (windows[:, 0] == 0.75).any():
            raise RuntimeError("encoder blew up")
        scores = super().score_windows(windows)
        scores[windows[:, 0] == 0.25] = np.nan
        scores[windows[:, 0] == -0.25] = np.inf
        return scores


def test_non_finite_or_failed_scores_become_errors_and_never_poison_the_alarm() -> None:
    async def body() -> list[Event]:
        pipeline = Pipeline(FlakyScorer(), replace(CFG, hop_s=1.0), replace(ENGINE, max_batch=1))
        worker = asyncio.create_task(pipeline.run())
        sub = pipeline.hub.subscribe(maxsize=10_000)
        handle = pipeline.open_stream("flaky", source="test", sample_rate=16000)
        seconds = []
        for marker in (None, 0.25, -0.25, 0.75, None, None, None, None):
            second = tone(1.0, freq=300.0)
            if marker is not None:
                second[0] = marker
            seconds.append(second)
        await handle.feed_wait(np.concatenate(seconds))
        await handle.close()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        return drain(sub)

    events = run(body())
    errors = [(e.code, e.message) for e in of_type(events, ErrorEvent)]
    assert [code for code, _ in errors] == ["inference_failed"] * 3
    assert "expected a finite score, found nan" in errors[0][1]
    assert "found inf" in errors[1][1] and "encoder blew up" in errors[2][1]
    scores = of_type(events, ScoreEvent)
    assert [s.t_end for s in scores] == [1.0, 5.0, 6.0, 7.0, 8.0]
    assert all(np.isfinite([s.score, s.smoothed]).all() for s in scores)
    alarms = of_type(events, AlarmEvent)  # a tone is "spoof" to FakeScorer: the alarm still works
    assert [a.state for a in alarms] == ["on", "off"]
