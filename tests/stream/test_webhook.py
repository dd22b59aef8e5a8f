"""WebhookSink against a real aiohttp receiver on loopback: signatures checked, failures on
purpose (5xx then OK, 4xx, Retry-After), a slow receiver (timeouts), one that is down, and
the order of alarm on/off per stream."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web

from fakes import FakeScorer, noise, tone
from spoofwatch.config import EngineConfig, ServerConfig, Settings, StreamConfig, load_settings
from spoofwatch.errors import ConfigError
from spoofwatch.events import AlarmEvent, EvidenceEvent, StreamEvent, parse_event
from spoofwatch.stream.app import serve
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.sinks.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    NODE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RetryPolicy,
    WebhookSink,
    full_jitter_delay,
    retry_after_s,
    sign,
    verify_signature,
    webhook_sink_from_config,
)

SECRET = "whsec-test-0123456789"
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
FAST = RetryPolicy(max_attempts=4, base_s=0.01, max_s=0.05)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    verdict: str | None  # None: the signature verified


@dataclass
class Receiver:
    """An HTTP endpoint that verifies every request and answers from a script: each entry
    is a status, or ("sleep", seconds), or (status, headers); past the script, 200."""

    script: list[object] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verdict = verify_signature(
            SECRET.encode(),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            body,
        )
        self.received.append(Received(dict(request.headers), body, time.monotonic(), verdict))
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, tuple) and step[0] == "sleep":
            await asyncio.sleep(float(step[1]))
            return web.Response(status=200)
        if isinstance(step, tuple):
            return web.Response(status=int(step[0]), headers=dict(step[1]))
        return web.Response(status=int(str(step)))

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks/{token}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hooks/t0ken"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def events(self) -> list[object]:
        return [parse_event(r.body) for r in self.received]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def alarm(stream: str, state: str, t: float) -> AlarmEvent:
    return AlarmEvent(stream=stream, state=state, t=t, p_spoof=0.9 if state == "on" else 0.1)  # type: ignore[arg-type]


def test_a_calls_alarms_are_posted_signed_in_order_and_scores_are_not() -> None:
    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver() as receiver:
            pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5), node="edge-1")
            sink = WebhookSink(pipeline.hub, [receiver.url], secret=SECRET, node="edge-1", policy=FAST)
            tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(sink.run())]
            handle = pipeline.open_stream("call-7", source="test", sample_rate=16000)
            audio = np.concatenate([noise(3.0), tone(4.0), noise(4.0)])
            for start in range(0, len(audio), 1600):
                await handle.feed_wait(audio[start : start + 1600])
            await handle.close()
            await until(lambda: sink.counters()[sink.endpoints[0].name]["delivered"] >= 2)
            await asyncio.sleep(0.1)  # nothing else (scores, stream events) follows
            for task in tasks:
                await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    events = receiver.events()
    assert [(e.type, getattr(e, "state", None)) for e in events] == [("alarm", "on"), ("alarm", "off")]
    assert all(r.verdict is None for r in receiver.received), [r.verdict for r in receiver.received]
    first = receiver.received[0].headers
    assert first[EVENT_HEADER] == "alarm" and first[NODE_HEADER] == "edge-1"
    assert first["Content-Type"] == "application/json"
    assert len({r.headers[DELIVERY_HEADER] for r in receiver.received}) == 2
    assert sink.counters() == {
        "0:http://127.0.0.1:" + receiver.url.split(":")[2].split("/")[0]: {
            "delivered": 2,
            "retried": 0,
            "dropped_queue_full": 0,
            "dropped_refused": 0,
            "dropped_gave_up": 0,
            "dropped": 0,
            "queued": 0,
        }
    }


def test_5xx_then_ok_is_retried_with_the_same_delivery_id_and_a_fresh_signature() -> None:
    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver(script=[500, 502, 503]) as receiver:
            hub = EventHub()
            sink = WebhookSink(hub, [receiver.url], secret=SECRET, policy=FAST)
            task = asyncio.create_task(sink.run())
            hub.publish(alarm("a", "on", 1.0))
            hub.publish(alarm("a", "off", 5.0))
            await until(lambda: sink.endpoints[0].counters.delivered == 2)
            await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    assert len(receiver.received) == 5
    ids = [r.headers[DELIVERY_HEADER] for r in receiver.received]
    assert len(set(ids[:4])) == 1 and ids[4] != ids[0]
    assert all(r.verdict is None for r in receiver.received)
    # the off event waited behind the on event's retries: the order holds
    assert [e.state for e in receiver.events()] == ["on", "on", "on", "on", "off"]  # type: ignore[attr-defined]
    counters = sink.endpoints[0].counters
    assert (counters.delivered, counters.retried, counters.dropped) == (2, 3, 0)


def test_a_4xx_is_not_retried_but_408_429_and_retry_after_are() -> None:
    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver(script=[404, 408, (429, {"Retry-After": "1"})]) as receiver:
            hub = EventHub()
            sink = WebhookSink(hub, [receiver.url], secret=SECRET, policy=FAST)
            task = asyncio.create_task(sink.run())
            hub.publish(alarm("a", "on", 1.0))  # 404: dropped
            hub.publish(alarm("b", "on", 2.0))  # 408, 429 + Retry-After 1, then 200
            await until(lambda: sink.endpoints[0].counters.delivered == 1)
            await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    counters = sink.endpoints[0].counters
    assert (counters.dropped_refused, counters.retried, counters.delivered) == (1, 2, 1)
    assert [e.stream for e in receiver.events()] == ["a", "b", "b", "b"]  # type: ignore[attr-defined]
    # Retry-After: 1 was honoured (the backoff alone is at most 0.05 s)
    assert receiver.received[3].at - receiver.received[2].at >= 0.95


def test_a_slow_receiver_times_out_and_is_retried() -> None:
    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver(script=[("sleep", 1.0), ("sleep", 1.0)]) as receiver:
            hub = EventHub()
            sink = WebhookSink(hub, [receiver.url], secret=SECRET, timeout_s=0.2, policy=FAST)
            task = asyncio.create_task(sink.run())
            hub.publish(alarm("a", "on", 1.0))
            await until(lambda: sink.endpoints[0].counters.delivered == 1)
            await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    assert len(receiver.received) == 3
    assert sink.endpoints[0].counters.retried == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_that_is_down_gives_up_without_holding_back_the_others() -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"

    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver() as receiver:
            pipeline = Pipeline(FakeScorer(), CFG, EngineConfig(max_batch=4, max_wait_ms=5))
            sink = WebhookSink(
                pipeline.hub,
                [down, receiver.url],
                secret=SECRET,
                events=["alarm", "stream"],
                policy=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.02),
            )
            tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(sink.run())]
            handle = pipeline.open_stream("call", source="test", sample_rate=16000)
            audio = np.concatenate([noise(3.0), tone(4.0)])
            for start in range(0, len(audio), 1600):
                await handle.feed_wait(audio[start : start + 1600])
            await handle.close()
            await until(lambda: sink.endpoints[1].counters.delivered == 4)
            await until(lambda: sink.endpoints[0].counters.dropped_gave_up == 4)
            for task in tasks:
                await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    kinds = [(e.type, getattr(e, "state", None)) for e in receiver.events()]
    assert kinds == [("stream", "start"), ("alarm", "on"), ("alarm", "off"), ("stream", "end")]
    assert isinstance(receiver.events()[0], StreamEvent)
    dead = sink.endpoints[0].counters
    assert (dead.delivered, dead.retried, dead.dropped) == (0, 8, 4)


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    async def body() -> tuple[Receiver, WebhookSink]:
        async with Receiver(script=[("sleep", 0.5)]) as receiver:
            hub = EventHub()
            sink = WebhookSink(hub, [receiver.url], secret=SECRET, queue=2, policy=FAST)
            task = asyncio.create_task(sink.run())
            hub.publish(alarm("s0", "on", 0.0))  # in flight while the others queue
            await until(lambda: len(receiver.received) == 1)
            for i in range(1, 6):
                hub.publish(alarm(f"s{i}", "on", float(i)))
            await until(lambda: sink.endpoints[0].counters.delivered == 3)
            await stop(task)
            return receiver, sink

    receiver, sink = asyncio.run(body())
    assert [e.stream for e in receiver.events()] == ["s0", "s4", "s5"]  # type: ignore[attr-defined]
    assert sink.endpoints[0].counters.dropped_queue_full == 3


def test_an_unsigned_sink_sends_no_signature_header() -> None:
    async def body() -> Receiver:
        async with Receiver() as receiver:
            hub = EventHub()
            sink = WebhookSink(hub, [receiver.url])
            task = asyncio.create_task(sink.run())
            hub.publish(alarm("a", "on", 1.0))
            await until(lambda: sink.endpoints[0].counters.delivered == 1)
            await stop(task)
            return receiver

    receiver = asyncio.run(body())
    assert SIGNATURE_HEADER not in receiver.received[0].headers
    assert receiver.received[0].verdict is not None


def test_signatures_cover_body_and_timestamp_and_refuse_replays() -> None:
    key, body, now = b"k", b'{"type":"alarm"}', 1_800_000_000
    good = sign(key, now, body)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert verify_signature(key, str(now), good, body, now=now + 10) is None
    assert "does not match" in (verify_signature(key, str(now), good, body + b" ", now=now) or "")
    assert "does not match" in (verify_signature(key, str(now + 1), good, body, now=now) or "")
    assert "does not match" in (verify_signature(b"other", str(now), good, body, now=now) or "")
    assert "within 300 s" in (verify_signature(key, str(now), good, body, now=now + 301) or "")
    assert "Unix seconds" in (verify_signature(key, "soon", good, body, now=now) or "")
    assert "sha256=" in (verify_signature(key, str(now), None, body, now=now) or "")


def test_backoff_has_full_jitter_under_a_doubling_cap_and_retry_after_parses() -> None:
    rng = random.Random(1)
    draws = [full_jitter_delay(3, 0.5, 60.0, rng) for _ in range(500)]
    assert 0.0 <= min(draws) < 0.5 and 3.5 < max(draws) <= 4.0
    assert all(d <= 60.0 for d in (full_jitter_delay(40, 0.5, 60.0, rng) for _ in range(50)))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_s("7") == 7.0
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_s("tomorrow-ish") is None and retry_after_s(None) is None


def test_config_urls_events_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = EventHub()
    for url, expected in [("ftp://h/x", "http:// or https://"), ("http:///x", "a host")]:
        with pytest.raises(ConfigError, match=expected):
            WebhookSink(hub, [url])
    with pytest.raises(ConfigError, match="'all' or some of"):
        WebhookSink(hub, ["http://h/x"], events=["score"])
    sink = WebhookSink(hub, ["https://h.example/x"], events=["all"])
    assert "alarm" in sink.types and "stream" in sink.types and "score" not in sink.types
    settings = load_settings(
        env={
            "SPOOFWATCH_SERVER_WEBHOOKS": "https://a.example/hook/SECRETPATH,http://b.example:8080/h",
            "SPOOFWATCH_SERVER_WEBHOOK_SECRET": SECRET,
            "SPOOFWATCH_SERVER_WEBHOOK_EVENTS": "alarm,evidence",
        }
    )
    server = settings.server
    assert server.webhooks == ("https://a.example/hook/SECRETPATH", "http://b.example:8080/h")
    assert SECRET not in repr(server) and "SECRETPATH" not in repr(server)
    from_config = webhook_sink_from_config(hub, server)
    assert from_config.types == {"alarm", "evidence"}
    assert list(from_config.counters()) == ["0:https://a.example:443", "1:http://b.example:8080"]
    with pytest.raises(ConfigError, match="webhook_queue"):
        ServerConfig(webhook_queue=0)


def test_cli_flags_reach_the_settings() -> None:
    from spoofwatch.cli import _server_settings, build_parser

    args = build_parser().parse_args(
        ["serve", "--webhook", "http://a/1", "--webhook", "http://b/2", "--webhook-events", "all"]
    )
    server = _server_settings(args).server
    assert server.webhooks == ("http://a/1", "http://b/2") and server.webhook_events == ("all",)


def test_serve_posts_a_file_sources_alarms_and_evidence_to_the_webhook(tmp_path: Path) -> None:
    """The composition root: ``serve`` with a local source, evidence on and a webhook."""
    wav = tmp_path / "turns.wav"
    sf.write(wav, np.concatenate([noise(3.0), tone(4.0), noise(4.0)]), 16000)

    async def body() -> Receiver:
        async with Receiver() as receiver:
            server = ServerConfig(
                port=0,
                sources=(f"file+fast:{wav}",),
                webhooks=(receiver.url,),
                webhook_secret=SECRET,
                webhook_events=("alarm", "evidence"),
                evidence_dir=str(tmp_path / "evidence"),
                evidence_seconds=6.0,
            )
            settings = Settings(stream=CFG, engine=EngineConfig(max_batch=4, max_wait_ms=5), server=server)
            stop = asyncio.Event()
            task = asyncio.create_task(serve(settings, FakeScorer(), stop=stop))
            await until(lambda: len(receiver.received) >= 3)
            stop.set()
            await asyncio.wait_for(task, 10)
            return receiver

    receiver = asyncio.run(body())
    assert all(r.verdict is None for r in receiver.received)
    kinds = [(e.type, getattr(e, "state", None)) for e in receiver.events()]
    assert sorted(kinds, key=str) == sorted([("alarm", "on"), ("alarm", "off"), ("evidence", None)], key=str)
    assert kinds.index(("alarm", "on")) < kinds.index(("alarm", "off"))
    evidence = next(e for e in receiver.events() if isinstance(e, EvidenceEvent))
    assert (tmp_path / "evidence" / f"{evidence.id}.wav").is_file() and evidence.stream == "turns"
