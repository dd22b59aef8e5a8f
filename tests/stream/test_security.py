"""Authentication on every path, TLS (wss/https), loopback by default, no secrets in logs."""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

from fakes import FakeScorer, noise
from selfsigned import CertFiles, make_self_signed
from spoofwatch.config import ServerConfig, load_settings
from spoofwatch.errors import ConfigError
from spoofwatch.events import ErrorEvent, ScoreEvent, StatusEvent
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net import auth as server_module
from spoofwatch.stream.net.audiosocket_server import AudioSocketServer
from spoofwatch.stream.net.redact import redact_text
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.net.tls import client_ssl_context, server_ssl_context
from streamkit import (
    LOCAL,
    TWILIO_CONNECTED,
    AudioHookClient,
    events_until_end,
    http_get,
    jambonz_metadata,
    of_type,
    recv_event,
    run,
    s16,
    send_audio,
    serving,
    start_message,
    twilio_start,
    until,
)

TOKEN = "tok-5f1e9c2a-not-in-any-log"
WITH_TOKEN = replace(LOCAL, token=TOKEN)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def closed_code(url: str, headers: dict[str, str] | None = None, **kwargs: object) -> int:
    """Connect and read until the server closes; the close code it sent."""
    async with connect(url, additional_headers=headers, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


# --- authentication ----------------------------------------------------------------


def test_jambonz_needs_the_token_as_bearer_query_or_basic_password() -> None:
    async def body() -> None:
        async with serving(WITH_TOKEN, sample_rate=8000) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/jambonz"
            for headers, query in [
                (None, ""),
                ({"Authorization": "Bearer wrong"}, ""),
                (basic("jambonz", "wrong"), ""),
                ({"Authorization": "Basic !!not-base64"}, ""),
                (None, "?token=wrong"),
            ]:
                assert await closed_code(url + query, headers) == 1008, (headers, query)
            assert not pipeline.streams
            accepted = [
                ({"Authorization": f"Bearer {TOKEN}"}, ""),
                (None, f"?token={TOKEN}"),
                (basic("j", TOKEN), ""),
            ]
            for n, (headers, query) in enumerate(accepted):
                async with connect(url + query, additional_headers=headers) as ws:
                    await ws.send(jambonz_metadata(f"CA-{n}"))
                    await ws.send(s16(noise(0.1, 8000)))
                    await until(lambda n=n: f"CA-{n}" in pipeline.streams, what="the call's stream")

    run(body())


def test_audiohook_accepts_bearer_and_query_tokens_and_refuses_none() -> None:
    async def open_session(url: str, headers: dict[str, str] | None) -> str:
        async with connect(url, additional_headers=headers) as ws:
            client = AudioHookClient(ws)
            await client.open()
            answer = await client.recv()
            if answer["type"] == "disconnect":
                await client.send("close", {"reason": "disconnect"})
                await client.recv()
                return str(answer["parameters"]["reason"])
            assert answer["type"] == "opened"
            await client.send("close", {"reason": "end"})
            assert (await client.recv())["type"] == "closed"
            return "opened"

    async def body() -> list[str]:
        async with serving(WITH_TOKEN, sample_rate=8000) as (server, pipeline):
            url = f"ws://127.0.0.1:{server.port}/audiohook"
            results = [
                await open_session(url, None),
                await open_session(url + "?token=wrong", None),
                await open_session(url, {"Authorization": f"Bearer {TOKEN}"}),
                await open_session(url + f"?token={TOKEN}", None),
            ]
            await until(lambda: not pipeline.streams)
            return results

    assert run(body()) == ["unauthorized", "unauthorized", "opened", "opened"]


def test_http_paths_and_unknown_paths_need_the_token_too() -> None:
    async def body() -> None:
        async with serving(WITH_TOKEN) as (server, _):
            for path in ("/", "/healthz", "/nope", "/?token=wrong"):
                status, headers, payload = await http_get(server.port, path)
                assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
                assert b"/v1/ingest" not in payload  # no route list for strangers
            assert (await http_get(server.port, f"/?token={TOKEN}"))[0] == 200
            assert (await http_get(server.port, "/healthz", basic("any", TOKEN)))[0] == 200
            assert (await http_get(server.port, "/nope", {"Authorization": f"Bearer {TOKEN}"}))[0] == 404
            for path in ("/v1/scores", "/v1/ingest", "/jambonz"):
                code = await closed_code(f"ws://127.0.0.1:{server.port}{path}?token={TOKEN[:-1]}")
                assert code == 1008, path

    run(body())


def test_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_module.hmac, "compare_digest", spy)
    pipeline = Pipeline(FakeScorer())
    server = SpoofwatchServer(pipeline, WITH_TOKEN)
    assert server.token_matches(TOKEN) and not server.token_matches(TOKEN + "x")
    assert not server.token_matches(None) and not server.token_matches("")
    assert calls == [
        (TOKEN.encode(), TOKEN.encode()),
        ((TOKEN + "x").encode(), TOKEN.encode()),
        (b"", TOKEN.encode()),
    ]
    assert SpoofwatchServer(pipeline, LOCAL).token_matches(None)  # no token configured: open


# --- binding -----------------------------------------------------------------------


def test_servers_bind_loopback_by_default() -> None:
    assert ServerConfig().host == "127.0.0.1"
    assert load_settings(env={}).server.host == "127.0.0.1"

    async def body() -> tuple[set[str], set[str]]:
        pipeline = Pipeline(FakeScorer())
        websocket = SpoofwatchServer(pipeline, ServerConfig(port=0))
        audiosocket = AudioSocketServer(pipeline, port=0)
        await websocket.start()
        await audiosocket.start()
        try:
            assert audiosocket._server is not None
            ws_hosts = {host for host, _ in websocket.addresses}
            as_hosts = {s.getsockname()[0] for s in audiosocket._server.sockets}
        finally:
            await websocket.stop()
            await audiosocket.stop()
        return ws_hosts, as_hosts

    assert run(body()) == ({"127.0.0.1"}, {"127.0.0.1"})


# --- TLS ---------------------------------------------------------------------------


@pytest.fixture(name="cert", scope="module")
def cert_fixture(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def test_wss_and_https_with_a_self_signed_certificate(cert: CertFiles) -> None:
    config = replace(LOCAL, tls_cert=str(cert.cert), tls_key=str(cert.key), token=TOKEN)
    trusting = client_ssl_context(str(cert.cert))

    async def body() -> None:
        async with serving(config) as (server, pipeline):
            assert server.scheme == "wss"
            base = f"wss://127.0.0.1:{server.port}"
            async with connect(f"{base}/v1/ingest?token={TOKEN}", ssl=trusting) as ws:
                await ws.send(start_message("tls-call"))
                await send_audio(ws, noise(2.0))
                await ws.send('{"type":"stop"}')
                events = await events_until_end(ws, "tls-call")
            assert [s.t_end for s in of_type(events, ScoreEvent)] == [1.0, 1.5, 2.0]
            status, _, payload = await http_get(server.port, f"/healthz?token={TOKEN}", ssl_context=trusting)
            assert status == 200 and b'"status": "ok"' in payload

            with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not know it
                async with connect(f"{base}/v1/scores?token={TOKEN}", ssl=ssl.create_default_context()):
                    pass
            with pytest.raises((InvalidMessage, ConnectionError, EOFError)):  # plain text is refused
                async with connect(f"ws://127.0.0.1:{server.port}/v1/scores?token={TOKEN}", open_timeout=3):
                    pass
            assert not pipeline.streams

    run(body())


def test_tls_configuration_errors_name_the_file(cert: CertFiles, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only the key"):
        ServerConfig(tls_key=str(cert.key))
    with pytest.raises(ConfigError, match=r"no file at /nonexistent/cert\.pem"):
        server_ssl_context("/nonexistent/cert.pem", str(cert.key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"garbage\.pem.*unusable"):
        server_ssl_context(str(garbage), str(cert.key))
    with pytest.raises(ConfigError, match="CA bundle"):
        client_ssl_context(str(tmp_path / "missing-ca.pem"))
    context = server_ssl_context(str(cert.cert), str(cert.key))
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_ssl_context(None) is None
    with pytest.raises(ConfigError, match="no file"):  # the server refuses before it listens
        SpoofwatchServer(Pipeline(FakeScorer()), replace(LOCAL, tls_cert=str(tmp_path / "nope.pem")))


# --- secrets stay out of logs --------------------------------------------------------


def test_repr_of_server_config_hides_secrets() -> None:
    config = ServerConfig(token=TOKEN, mqtt="mqtts://me:pa55word@broker:8883", mqtt_password="hunter2")
    text = repr(config)
    assert TOKEN not in text and "pa55word" not in text and "hunter2" not in text
    assert "mqtts://me:<redacted>@broker:8883" in text and "token='<redacted>'" in text
    assert "ServerConfig(host='127.0.0.1'" in text


def test_redact_text_masks_headers_queries_json_and_known_secrets() -> None:
    assert redact_text("< Authorization: Bearer abc") == "< Authorization: <redacted>"
    assert redact_text("< x-api-key: abc") == "< x-api-key: <redacted>"
    assert redact_text("< GET /v1/ingest?stream=a&token=abc HTTP/1.1") == (
        "< GET /v1/ingest?stream=a&token=<redacted> HTTP/1.1"
    )
    json_text = '{"customParameters":{"token":"abc"}}'
    assert redact_text(json_text) == '{"customParameters":{"token":"<redacted>"}}'
    assert redact_text("partial abcdef here", ["abcdef"]) == "partial <redacted> here"
    assert redact_text("< Host: example") == "< Host: example"


def test_no_token_in_any_log_record_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    wrong = "wrong-" + TOKEN[::-1]

    async def body() -> None:
        async with serving(WITH_TOKEN, sample_rate=8000) as (server, pipeline):
            base = f"ws://127.0.0.1:{server.port}"
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with connect(f"{base}/v1/scores", additional_headers=bearer) as ws:
                assert isinstance(await recv_event(ws), StatusEvent)
            async with connect(f"{base}/v1/ingest?token={TOKEN}") as ws:
                await ws.send(start_message("logged", sample_rate=8000))
                await send_audio(ws, noise(1.2, 8000), chunk=800)
                await ws.send('{"type":"stop"}')
                await events_until_end(ws, "logged")
            for url in (f"{base}/v1/scores?token={wrong}", f"{base}/v1/ingest"):
                assert await closed_code(url, {"Authorization": f"Bearer {wrong}"}) == 1008
            async with connect(f"{base}/twilio") as twilio:  # the token inside a text frame
                await twilio.send(TWILIO_CONNECTED)
                await twilio.send(twilio_start("MZlog", params={"token": TOKEN}))
                await until(lambda: "MZlog" in pipeline.streams)
            async with connect(f"{base}/audiohook", additional_headers={"X-API-KEY": TOKEN}) as ws:
                client = AudioHookClient(ws)
                await client.open()
                assert (await client.recv())["type"] == "opened"
            assert (await http_get(server.port, f"/healthz?token={TOKEN}"))[0] == 200
            assert (await http_get(server.port, "/healthz", {"Authorization": f"Bearer {wrong}"}))[0] == 401
            await until(lambda: not pipeline.streams)
            # Whatever aiohttp itself logs while the server runs is filtered too.
            logging.getLogger("aiohttp.server").debug("< Authorization: Bearer %s", TOKEN)
            logging.getLogger("aiohttp.web").error("failed", exc_info=ValueError(f"bad {TOKEN}"))

    with caplog.at_level(logging.DEBUG):
        run(body())
    # The test's own clients log through websockets.client; everything else is the server's.
    records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    texts = [r.getMessage() + (r.exc_text or "") for r in records]
    library = [t for r, t in zip(records, texts, strict=True) if r.name.startswith("aiohttp")]
    # The library's DEBUG lines were there (so the check below means something) and redacted.
    assert any("GET /v1/ingest?token=<redacted>" in t for t in library)
    assert any("GET /healthz?token=<redacted> 200" in t for t in library)
    assert any(t.startswith("< Authorization: <redacted>") for t in library)
    assert any("ValueError: bad <redacted>" in t for t in library)
    leaks = [(r.name, t) for r, t in zip(records, texts, strict=True) if TOKEN[:12] in t or wrong[:12] in t]
    assert leaks == []


def test_refused_clients_get_error_events_not_secrets() -> None:
    """A wrong token is never echoed back to the client in a close reason or an event."""

    async def body() -> tuple[str, list[ErrorEvent]]:
        async with serving(WITH_TOKEN) as (server, pipeline):
            sub = pipeline.hub.subscribe()
            async with connect(f"ws://127.0.0.1:{server.port}/v1/ingest?token=guess-123") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            events = []
            while not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            return closed.value.rcvd.reason, [e for e in events if isinstance(e, ErrorEvent)]

    reason, errors = run(body())
    assert reason == "unauthorized: expected a valid bearer token" and "guess-123" not in reason
    assert errors == []
