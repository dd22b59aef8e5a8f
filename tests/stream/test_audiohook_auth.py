"""AudioHook authentication: HTTP message signatures computed as Genesys' reference client
computes them (``audiohook_signing``, a port of its ``SignatureBuilder``), verified by
``net.audiohook_auth`` alone and through ``/audiohook`` over loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import streamkit
from audiohook_signing import SignatureBuilder, audiohook_headers
from spoofwatch.config import load_settings
from spoofwatch.errors import ConfigError
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.audiohook_auth import (
    AudioHookAuthenticator,
    AudioHookClients,
    check_organization,
    load_audiohook_clients,
)
from spoofwatch.stream.net.server import SpoofwatchServer
from waits import scaled

API_KEY = "spoofwatch-test-key"
SECRET_B64 = "c3Bvb2Z3YXRjaC1jbGllbnQtc2VjcmV0LTAxMjM0NQ=="
SECRET = base64.b64decode(SECRET_B64)
ORG = "d7934305-0972-4844-938e-9060eef73d05"
SESSION = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
CORRELATION = "e160e428-53e2-487c-977d-96989bf5c99d"

# Made with the reference implementation's own SignatureBuilder (its TypeScript compiled
# with tsc 5 and run on node 20), for @authority 127.0.0.1:8765 and the constants above.
REFERENCE_VECTOR = {
    "signature-input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" '
    '"audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="spoofwatch-test-key";'
    'nonce="Tm9uY2VGb3JTcG9vZndhdGNoVGVzdHM=";alg="hmac-sha256";created=1765000000;expires=1765000030',
    "signature": "sig1=:1DIjkGEkgVzsTmAKh5uLBU3ZeRJh1Cs5cNPN0XZUXGQ=:",
}
REFERENCE_NONCE = "Tm9uY2VGb3JTcG9vZndhdGNoVGVzdHM="


def lower(headers: dict[str, str]) -> dict[str, list[str]]:
    return {k.lower(): [v] for k, v in headers.items()}


def signed(
    *, created: float, nonce: str | None = None, secret: bytes = SECRET, **overrides: str
) -> dict[str, str]:
    fields: dict[str, Any] = {
        "uri_path": "/audiohook",
        "authority": "127.0.0.1:8765",
        "organization_id": ORG,
        "session_id": SESSION,
        "correlation_id": CORRELATION,
        "api_key": API_KEY,
    }
    fields.update(overrides)
    headers = audiohook_headers(client_secret=secret, created=created, nonce=nonce, **fields)
    headers["Host"] = fields["authority"]  # what the WebSocket client sends
    return headers


def authenticator(now: float, clients: dict[str, bytes] | None = None) -> AudioHookAuthenticator:
    return AudioHookAuthenticator(AudioHookClients(clients or {API_KEY: SECRET}), clock=lambda: now)


# --- the verifier alone ------------------------------------------------------------------


def test_the_signing_port_reproduces_the_reference_implementations_vector() -> None:
    headers = signed(created=1765000000, nonce=REFERENCE_NONCE)
    assert {k: headers[k] for k in REFERENCE_VECTOR} == REFERENCE_VECTOR
    # and the reference's own builder test (a "host" component, its documented key)
    doc = (
        SignatureBuilder()
        .add_component("@request-target", "/api/v1/voicebiometrics/ws")
        .add_component("host", "audiohook.example.com")
        .add_component("audiohook-organization-id", ORG)
        .add_component("audiohook-session-id", SESSION)
        .add_component("audiohook-correlation-id", CORRELATION)
        .add_component("x-api-key", "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh")
        .create_signature(
            keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
            key=base64.b64decode("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="),
            created=1641013200,
            expires=1641013230,
            nonce="VGhpc0lzQVVuaXF1ZU5vbmNl",
        )
    )
    assert doc["signature"] == "sig1=:zupMJUMfd/kMuvKc5zhRyfJPE3jTROuz1S1hn8SCTpE=:"


def test_the_audiohook_documentation_example_verifies() -> None:
    """The verifier test vector of the reference implementation (Genesys' documented example)."""
    headers = {
        "host": ["audiohook.example.com"],
        "audiohook-organization-id": [ORG],
        "audiohook-session-id": [SESSION],
        "audiohook-correlation-id": [CORRELATION],
        "x-api-key": ["SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"],
        "signature": ["sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"],
        "signature-input": [
            'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
            '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
            'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430'
        ],
    }
    secret = base64.b64decode("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU=")
    auth = authenticator(1641013201, {"SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh": secret})
    assert str(auth.verify(headers, "/api/v1/voicebiometrics/ws")) == "VERIFIED"
    assert str(auth.verify(headers, "/api/v1/voicebiometrics/other")) == "FAILED: Signatures do not match"


CASES: list[tuple[str, Callable[[float], tuple[dict[str, list[str]], float]], str]] = [
    ("valid", lambda now: (lower(signed(created=now)), now), "VERIFIED"),
    (
        "wrong secret",
        lambda now: (lower(signed(created=now, secret=b"not the secret")), now),
        "FAILED: Signatures do not match",
    ),
    ("stale", lambda now: (lower(signed(created=now - 20)), now), "EXPIRED"),
    ("expired", lambda now: (lower(signed(created=now - 40)), now), "EXPIRED: Signature has expired"),
    (
        "from the future",
        lambda now: (lower(signed(created=now + 60)), now),
        'PRECONDITION: Invalid "created" parameter value (time in the future)',
    ),
    (
        "key id",
        lambda now: (lower(signed(created=now, keyid="someone-else")), now),
        "PRECONDITION: X-API-KEY header field and signature keyid mismatch",
    ),
    (
        "unknown key",
        lambda now: (lower(signed(created=now, api_key="unknown-key")), now),
        "FAILED: Signatures do not match",
    ),
    (
        "short nonce",
        lambda now: (lower(signed(created=now, nonce="short")), now),
        'PRECONDITION: Provided "nonce" signature parameter is too small',
    ),
    (
        "unsigned",
        lambda now: (
            lower(
                audiohook_headers(
                    uri_path="/audiohook",
                    authority="h",
                    organization_id=ORG,
                    session_id=SESSION,
                    correlation_id=CORRELATION,
                    api_key=API_KEY,
                    client_secret=None,
                )
            ),
            now,
        ),
        'UNSIGNED: No "signature" and "signature-input" header fields',
    ),
]


@pytest.mark.parametrize(("name", "make", "expected"), CASES, ids=[c[0] for c in CASES])
def test_verification_outcomes(
    name: str, make: Callable[[float], tuple[dict[str, list[str]], float]], expected: str
) -> None:
    now = 1765000000.0
    headers, clock = make(now)
    result = authenticator(clock).verify(headers, "/audiohook")
    assert str(result).startswith(expected)
    assert SECRET_B64 not in str(result)


def test_a_replayed_nonce_and_a_tampered_header_are_refused() -> None:
    now = 1765000000.0
    auth = authenticator(now)
    headers = lower(signed(created=now))
    assert auth.verify(headers, "/audiohook").ok
    assert str(auth.verify(headers, "/audiohook")) == (
        'FAILED: Replayed "nonce" signature parameter (seen in an earlier request)'
    )
    tampered = lower(signed(created=now)) | {"audiohook-session-id": [str(uuid.uuid4())]}
    assert str(auth.verify(tampered, "/audiohook")) == "FAILED: Signatures do not match"
    uncovered = lower(signed(created=now))
    uncovered["signature-input"] = [uncovered["signature-input"][0].replace(' "x-api-key"', "")]
    assert str(auth.verify(uncovered, "/audiohook")) == (
        'PRECONDITION: Signature does not cover some of the required component(s): "x-api-key"'
    )
    garbled = lower(signed(created=now)) | {"signature": ["sig1=:not base64!:"]}
    assert str(auth.verify(garbled, "/audiohook")) == 'INVALID: Failed to parse "signature" header field'


def test_an_empty_secret_is_the_api_key_only_mode() -> None:
    auth = authenticator(1765000000.0, {API_KEY: SECRET, "unsigned-platform": b""})
    unsigned = {"x-api-key": ["unsigned-platform"]}
    assert auth.verify(unsigned, "/audiohook").ok
    assert not auth.verify({"x-api-key": [API_KEY]}, "/audiohook").ok  # a key with a secret must sign
    assert str(auth.verify({}, "/audiohook")) == 'PRECONDITION: Missing "X-API-KEY" header field'


def test_organization_header_must_match_the_open_message() -> None:
    assert check_organization(ORG, ORG).ok
    assert str(check_organization(ORG, str(uuid.uuid4()))) == (
        'PRECONDITION: Mismatch between "organizationId" open parameter and '
        '"audiohook-organization-id" header field'
    )
    assert not check_organization(None, ORG).ok


def test_clients_come_from_config_env_and_a_secrets_file_and_are_never_shown(tmp_path: Path) -> None:
    secrets_file = tmp_path / "audiohook.secrets"
    secrets_file.write_text(f"# api key : base64 client secret\nfile-key:{SECRET_B64}\n\nunsigned:\n")
    settings = load_settings(
        env={
            "SPOOFWATCH_SERVER_AUDIOHOOK_CLIENTS": f"{API_KEY}:{SECRET_B64},other:{SECRET_B64}",
            "SPOOFWATCH_SERVER_AUDIOHOOK_CLIENTS_FILE": str(secrets_file),
        }
    )
    clients = load_audiohook_clients(
        settings.server.audiohook_clients, settings.server.audiohook_clients_file
    )
    assert clients.secrets == {API_KEY: SECRET, "other": SECRET, "file-key": SECRET, "unsigned": b""}
    assert SECRET_B64 not in repr(settings.server) and "audiohook_clients='<redacted>'" in repr(
        settings.server
    )
    assert SECRET_B64 not in repr(clients)
    with pytest.raises(ConfigError, match="expected the client secret of API key 'k' to be base64"):
        load_audiohook_clients(["k:%%%"])
    with pytest.raises(ConfigError, match="expected entries 'API_KEY:BASE64_CLIENT_SECRET'"):
        load_audiohook_clients(["no-colon"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_audiohook_clients([], str(tmp_path / "missing"))


# --- over loopback ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def signing_server() -> AsyncIterator[tuple[SpoofwatchServer, Pipeline]]:
    config = replace(streamkit.LOCAL, audiohook_clients=(f"{API_KEY}:{SECRET_B64}",))
    async with streamkit.serving(config, sample_rate=8000) as served:
        yield served


async def session(
    port: int, headers: dict[str, str], org: str = ORG
) -> tuple[dict[str, Any], tuple[int, str]]:
    """Open (with ``org`` in the open message) and return the server's answer and the close."""
    async with connect(f"ws://127.0.0.1:{port}/audiohook", additional_headers=headers) as ws:
        seq = 0

        async def send(kind: str, params: dict[str, object], serverseq: int) -> None:
            nonlocal seq
            seq += 1
            message = {
                "version": "2",
                "id": SESSION,
                "type": kind,
                "seq": seq,
                "serverseq": serverseq,
                "position": "PT0S",
                "parameters": params,
            }
            await ws.send(json.dumps(message))

        media = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
        await send("open", {"organizationId": org, "conversationId": str(uuid.uuid4()), "media": [media]}, 0)
        reply = json.loads(await recv_text(ws))
        await send("close", {"reason": "end" if reply["type"] == "opened" else "disconnect"}, reply["seq"])
        closed = json.loads(await recv_text(ws))
        assert closed["type"] == "closed"
        with pytest.raises(ConnectionClosed) as ended:
            while True:
                await ws.recv()
        assert ended.value.rcvd is not None
        return reply, (ended.value.rcvd.code, ended.value.rcvd.reason)


async def recv_text(ws: ClientConnection) -> str:
    text = await ws.recv()
    assert isinstance(text, str)
    return text


def headers_for(port: int, **kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("created", time.time())
    headers = signed(authority=f"127.0.0.1:{port}", **kwargs)
    del headers["Host"]  # the WebSocket client sends its own
    return headers


def test_signed_sessions_over_loopback() -> None:
    async def body() -> dict[str, tuple[dict[str, Any], tuple[int, str]]]:
        async with signing_server() as (server, pipeline):
            port = server.port
            out = {"valid": await session(port, headers_for(port))}
            replayed = headers_for(port)
            await session(port, replayed)
            out["replayed"] = await session(port, replayed)
            out["wrong secret"] = await session(port, headers_for(port, secret=b"guess"))
            out["stale"] = await session(port, headers_for(port, created=time.time() - 30))
            out["key id"] = await session(port, headers_for(port, keyid="another-key"))
            out["organization"] = await session(port, headers_for(port), org=str(uuid.uuid4()))
            token_only = {"X-API-KEY": API_KEY}
            out["unsigned"] = await session(port, token_only)
            assert not pipeline.streams
            return out

    out = asyncio.run(asyncio.wait_for(body(), scaled(30)))
    reply, (code, _) = out["valid"]
    assert reply["type"] == "opened" and code == 1000
    expected = {
        "replayed": 'FAILED: Replayed "nonce"',
        "wrong secret": "FAILED: Signatures do not match",
        "stale": "EXPIRED",
        "key id": "PRECONDITION: X-API-KEY header field and signature keyid mismatch",
        "organization": 'PRECONDITION: Mismatch between "organizationId" open parameter',
        "unsigned": "UNSIGNED",
    }
    for name, prefix in expected.items():
        reply, (code, reason) = out[name]
        assert reply["type"] == "disconnect", name
        assert reply["parameters"]["reason"] == "unauthorized", name
        assert reply["parameters"]["info"].startswith(f"unauthorized: {prefix}"), (name, reply)
        assert code == 1008 and reason.startswith("unauthorized:"), name
        assert SECRET_B64 not in json.dumps(reply)
