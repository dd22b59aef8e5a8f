"""examples/webhook_receiver.py, run as written, receives WebhookSink's signed events and
refuses forged, stale and unsigned ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from spoofwatch.events import AlarmEvent, parse_event, to_json
from spoofwatch.stream.engine.hub import EventHub
from spoofwatch.stream.sinks.webhook import RetryPolicy, WebhookSink, sign

REPO = Path(__file__).resolve().parents[1]
SECRET = "example-secret-42"


@pytest.fixture
def receiver() -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "SPOOFWATCH_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples/webhook_receiver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("listening on http://"), line
    try:
        yield proc, line.split()[-1] + "hook"
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_receiver_prints_signed_events_once_and_refuses_forgeries(
    receiver: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = receiver
    events = [
        AlarmEvent(stream="call:agent", state="on", t=4.0, p_spoof=0.9),
        AlarmEvent(stream="call:agent", state="off", t=9.0, p_spoof=0.1),
    ]

    async def send() -> WebhookSink:
        hub = EventHub()
        sink = WebhookSink(
            hub, [url], secret=SECRET, policy=RetryPolicy(max_attempts=2, base_s=0.01, max_s=0.02)
        )
        task = asyncio.create_task(sink.run())
        for event in events:
            hub.publish(event)
        deadline = time.monotonic() + 10
        while sink.endpoints[0].counters.delivered < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sink

    sink = asyncio.run(send())
    assert sink.endpoints[0].counters.dropped == 0
    body = to_json(events[0]).encode()
    now = int(time.time())
    good = {"X-Spoofwatch-Timestamp": str(now), "X-Spoofwatch-Signature": sign(SECRET.encode(), now, body)}
    assert post(url, body, {**good, "X-Spoofwatch-Delivery": "replayed"}) == 204
    assert post(url, body, {**good, "X-Spoofwatch-Delivery": "replayed"}) == 204  # printed once
    assert post(url, body + b" ", good) == 401  # tampered body
    stale = now - 3600
    old = {"X-Spoofwatch-Timestamp": str(stale), "X-Spoofwatch-Signature": sign(SECRET.encode(), stale, body)}
    assert post(url, body, old) == 401
    assert post(url, body, {}) == 401
    wrong = {**good, "X-Spoofwatch-Signature": sign(b"not-the-secret", now, body)}
    assert post(url, body, wrong) == 401
    proc.terminate()
    stdout, stderr = proc.communicate(timeout=10)
    printed = [parse_event(line) for line in stdout.splitlines()]
    assert printed == [*events, events[0]]
    assert stderr.count("refused:") == 4
