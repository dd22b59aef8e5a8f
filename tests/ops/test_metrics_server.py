"""``spoofwatch serve`` (app.serve) mounts /metrics on its one port, behind its token: a
real ingest over WebSocket moves the scraped values."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from fakes import FakeScorer, noise
from spoofwatch.config import EngineConfig, ServerConfig, Settings, StreamConfig
from spoofwatch.stream.app import serve
from streamkit import events_until_end, http_get, run, send_audio, start_message, until

TOKEN = "metrics-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_serve_exposes_metrics_on_its_port_behind_the_token() -> None:
    """Also: a real webhook receiver gets the stream's start and end events, and the
    webhook sink's deliveries show on /metrics."""
    port, hook_port = free_port(), free_port()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"
    settings = Settings(
        stream=StreamConfig(window_s=1.0, hop_s=0.5),
        engine=EngineConfig(max_batch=4, max_wait_ms=1),
        server=ServerConfig(
            port=port,
            token=TOKEN,
            node="m1",
            webhooks=(hook_url,),
            webhook_secret="s3cret",
            webhook_events=("stream",),
        ),
    )
    auth = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
    received: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    async def body() -> None:
        receiver = web.Application()
        receiver.router.add_post("/hook", receive)
        runner = web.AppRunner(receiver)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(settings, FakeScorer(window_s=1.0), ready=ready, stop=stop))
        await ready.wait()
        try:
            status, _, _ = await http_get(port, "/metrics")
            assert status == 401
            status, headers, before = await http_get(port, "/metrics", auth)
            assert status == 200 and headers["content-type"].startswith("text/plain; version=")
            assert parse(before)[("spoofwatch_windows_scored_total", frozenset())] == 0
            async with connect(f"ws://127.0.0.1:{port}/v1/ingest?token={TOKEN}") as ws:
                await ws.send(start_message("m-call"))
                await send_audio(ws, noise(3.0))
                await ws.send('{"type":"stop"}')
                await events_until_end(ws, "m-call")
            _, _, after = await http_get(port, "/metrics", auth)
            samples = parse(after)
            assert samples[("spoofwatch_windows_scored_total", frozenset())] == 5
            assert samples[("spoofwatch_streams_opened_total", frozenset({("source", "ws_ingest")}))] == 1
            assert samples[("spoofwatch_scoring_lag_seconds_count", frozenset())] == 5
            info = [labels for (name, labels), _ in samples.items() if name == "spoofwatch_detector_info"]
            assert info and ("name", "FakeScorer") in info[0]
            await until(lambda: len(received) == 2, 10.0, "both stream events delivered")
            _, _, hooked = await http_get(port, "/metrics", auth)
            delivered = [
                value
                for (name, labels), value in parse(hooked).items()
                if name == "spoofwatch_webhook_deliveries_total" and ("outcome", "delivered") in labels
            ]
            assert delivered == [2]
        finally:
            stop.set()
            await server
            await runner.cleanup()

    run(body(), timeout_s=60)
