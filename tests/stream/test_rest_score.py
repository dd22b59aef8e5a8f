"""``POST /v1/score`` and ``GET /v1/openapi.json`` against the real server on a loopback
port, with a tiny real detector (a random two-layer wav2vec2 and a fitted head)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from numpy.typing import NDArray
from websockets.asyncio.client import connect

from fakes import TINY_HIDDEN, FakeScorer, save_tiny_wav2vec2
from spoofwatch.audio.sniff import sniff_audio_format
from spoofwatch.config import EngineConfig, ServerConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import ScoreEvent
from spoofwatch.model.artifact import load_detector, save_detector
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.detector import Detector, DetectorSettings
from spoofwatch.model.encoders.hf import HFEncoder
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.head import LinearHead
from spoofwatch.model.pooling import pooled_dim
from spoofwatch.ops.bench import speech_like
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.openapi import openapi_document
from spoofwatch.stream.net.rest_score import RestScorer, ScoreLimits, card_window_config, error_object
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.train.clip_scoring import ClipScore, score_file
from streamkit import events_until_end, of_type, run, send_audio, start_message

TOKEN = "rest-token-3f9a"
WINDOW_S = 0.5
LAYERS = (0, 2)


@pytest.fixture(name="detector", scope="module")
def detector_fixture(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    root = tmp_path_factory.mktemp("rest")
    save_tiny_wav2vec2(root / "encoder")
    encoder = HFEncoder(str(root / "encoder"), window_s=WINDOW_S)
    rng = np.random.default_rng(0)
    width = pooled_dim(len(LAYERS), TINY_HIDDEN)
    head = LinearHead(C=1.0).fit(rng.standard_normal((20, width)).astype(np.float32), np.arange(20) % 2)
    save_detector(
        root / "detector",
        head=head,
        calibration=AffineCalibration(1.0, 0.0),
        settings=DetectorSettings(window_s=WINDOW_S, hop_s=0.25, layers=LAYERS),
        encoder_spec=EncoderSpec("hf", str(root / "encoder")),
        encoder_identity=encoder.identity,
    )
    # As `serve` loads it: the stream's hop (0.5 s), not the card's (0.25 s).
    return load_detector(root / "detector", window_s=WINDOW_S, hop_s=0.5)


def encode(audio: NDArray[np.float32], rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


FORMATS = {
    "wav": ("WAV", "PCM_16", 16000),
    "flac": ("FLAC", "PCM_16", 22050),
    "ogg-opus": ("OGG", "OPUS", 48000),
    "ogg-vorbis": ("OGG", "VORBIS", 16000),
    "mp3": ("MP3", "MPEG_LAYER_III", 16000),
}


def clip(seconds: float, rate: int, seed: int = 1) -> NDArray[np.float32]:
    return speech_like(seconds, rate, seed=seed).astype(np.float32)


@dataclass
class Served:
    server: SpoofwatchServer
    pipeline: Pipeline
    scorer: RestScorer
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def score(
        self, body: bytes, *, token: str | None = TOKEN, query: str = "", content_type: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type:
            headers["Content-Type"] = content_type
        async with self.session.post(self.url(f"/v1/score{query}"), data=body, headers=headers) as response:
            if response.content_type != "application/json":
                return response.status, {"text": await response.text()}
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def serving(
    detector: Detector,
    limits: ScoreLimits | None = None,
    scorer: RestScorer | None = None,
    token: str | None = TOKEN,
) -> AsyncIterator[Served]:
    stream = StreamConfig(window_s=WINDOW_S, hop_s=0.5, smoothing_n=1)
    pipeline = Pipeline(detector, stream, EngineConfig(max_batch=8, max_wait_ms=5))
    worker = asyncio.create_task(pipeline.run(), name="worker")
    rest = scorer or RestScorer(detector, limits)
    server = SpoofwatchServer(
        pipeline, ServerConfig(host="127.0.0.1", port=0, token=token), extra_routes=rest.routes()
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(server, pipeline, rest, session)
    finally:
        await server.stop()
        rest.close()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def test_the_sniffer_tells_the_four_containers_and_refuses_the_rest() -> None:
    audio = clip(0.2, 16000)
    for name, (fmt, subtype, rate) in FORMATS.items():
        expected = name.split("-")[0]
        assert sniff_audio_format(encode(clip(0.2, rate), rate, fmt, subtype)[:16]) == expected, name
    assert sniff_audio_format(b"ID3\x04\x00" + bytes(11)) == "mp3"
    for junk in (
        b"",
        b"RIFF\x00\x00\x00\x00AVI ",
        b"\xff\xff\xff\xff",
        b"hello world, not audio",
        b"%PDF-1.7",
    ):
        assert sniff_audio_format(junk) is None, junk
    assert sniff_audio_format(encode(audio, 16000, "AIFF", "PCM_16")[:16]) is None


def test_each_format_scores_as_score_json_does_for_the_same_file(detector: Detector, tmp_path: Path) -> None:
    bodies = {name: encode(clip(2.0, rate), rate, fmt, sub) for name, (fmt, sub, rate) in FORMATS.items()}

    async def body() -> dict[str, tuple[int, dict[str, Any]]]:
        async with serving(detector) as served:
            answers = {}
            for name, data in bodies.items():
                # Content-Type is optional and never trusted: none, or a wrong one.
                content_type = "text/plain" if name == "wav" else None
                answers[name] = await served.score(data, query=f"?name={name}", content_type=content_type)
            return answers

    answers = run(body(), timeout_s=60)
    # What `spoofwatch score --json` prints: the card's windows (hop 0.25 s), not the stream's.
    window = card_window_config(detector)
    assert window.hop_s == 0.25
    for name, (status, result) in answers.items():
        path = tmp_path / f"clip.{name.split('-')[0]}"
        path.write_bytes(bodies[name])
        expected = score_file(detector, path, window).to_dict()
        expected["path"] = name
        assert status == 200, (name, result)
        assert_same_result(result, expected)
        assert len(result["windows"]) == 7 and result["label"] in ("spoof", "bonafide")


def assert_same_result(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal up to float rounding (another thread's torch may sum in another order)."""
    assert set(got) == set(expected)
    windows = got["windows"], expected["windows"]
    scalars = [{k: v for k, v in d.items() if k != "windows"} for d in (got, expected)]
    assert scalars[0] == pytest.approx(scalars[1], abs=1e-5)
    assert len(windows[0]) == len(windows[1])
    for mine, theirs in zip(*windows, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5)


def test_bad_bodies_get_the_error_object_with_a_4xx(detector: Detector) -> None:
    wav = encode(clip(2.0, 16000), 16000, "WAV", "PCM_16")
    flac = encode(clip(2.0, 16000), 16000, "FLAC", "PCM_16")
    limits = ScoreLimits(max_bytes=200_000, max_duration_s=5.0)

    async def body() -> dict[str, tuple[int, dict[str, Any]]]:
        async with serving(detector, limits) as served:
            return {
                "text": await served.score(b"this is not audio at all", query="?name=notes.txt"),
                "empty": await served.score(b""),
                "truncated flac": await served.score(flac[:600], query="?name=cut.flac"),
                "short": await served.score(encode(clip(0.2, 16000), 16000, "WAV", "PCM_16")),
                "long": await served.score(encode(clip(6.0, 8000), 8000, "WAV", "PCM_16")),
                "big": await served.score(wav + bytes(200_000)),
                "fine": await served.score(wav),
            }

    answers = run(body(), timeout_s=60)
    statuses = {name: status for name, (status, _) in answers.items()}
    assert statuses == {
        "text": 415,
        "empty": 400,
        "truncated flac": 400,
        "short": 400,
        "long": 413,
        "big": 413,
        "fine": 200,
    }
    for name, (_, result) in answers.items():
        if name != "fine":
            assert set(result) == {"path", "error"}, name
    assert answers["text"][1]["path"] == "notes.txt"
    assert (
        "expected WAV, FLAC, OGG (Opus or Vorbis) or MP3 audio, found data starting 'this is '"
        in (answers["text"][1]["error"])
    )
    assert answers["truncated flac"][1]["error"].startswith("cut.flac: ")
    assert "/tmp" not in answers["truncated flac"][1]["error"]  # the server's temporary file is not named
    assert "shorter than the minimum" in answers["short"][1]["error"]
    assert "expected at most 5 s of audio, found 6.00 s" in answers["long"][1]["error"]
    assert "expected at most 200000 bytes" in answers["big"][1]["error"]
    # The same object `spoofwatch score --json` prints for a file it cannot score.
    assert error_object("x", "x: bad") == ClipScore(path="x", error="x: bad").to_dict()


def test_score_and_openapi_need_the_token(detector: Detector) -> None:
    wav = encode(clip(1.0, 16000), 16000, "WAV", "PCM_16")

    async def body() -> list[int]:
        async with serving(detector) as served:
            statuses = [
                (await served.score(wav, token=None))[0],
                (await served.score(wav, token="wrong"))[0],
                (await served.score(wav, query=f"?token={TOKEN}", token=None))[0],
            ]
            async with served.session.get(served.url("/v1/openapi.json")) as response:
                statuses.append(response.status)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            auth = {"Authorization": "Basic " + base64.b64encode(f"any:{TOKEN}".encode()).decode()}
            async with served.session.get(served.url("/v1/openapi.json"), headers=auth) as response:
                statuses.append(response.status)
                document = await response.json()
            async with served.session.get(served.url("/v1/score"), headers=auth) as response:
                statuses.append(response.status)  # POST only
            assert document == openapi_document()
            return statuses

    assert run(body(), timeout_s=60) == [401, 401, 200, 401, 200, 405]


def test_the_openapi_description_is_valid_and_covers_the_http_paths() -> None:
    from openapi_spec_validator import validate

    document = openapi_document()
    validate(document)  # raises on an invalid description
    assert set(document["paths"]) == {"/v1/score", "/healthz", "/v1/openapi.json", "/"}
    responses = document["paths"]["/v1/score"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415"} <= set(responses)
    for websocket in ("/v1/scores", "/v1/ingest", "/twilio", "/audiohook", "/jambonz"):
        assert f"`{websocket}" in document["info"]["description"], websocket


class GatedDetector(Detector):
    """The real detector, except that REST scoring waits inside ``score_windows`` until
    the test opens the gate: the score is provably running while the stream goes on."""

    def __init__(self, inner: Detector) -> None:
        self.__dict__.update(inner.__dict__)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def score_windows(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> NDArray[np.float64]:
        self.entered.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        return super().score_windows(windows, remakes)


def test_a_live_stream_keeps_scoring_while_a_rest_score_runs(detector: Detector) -> None:
    gated = GatedDetector(detector)
    wav = encode(clip(3.0, 16000), 16000, "WAV", "PCM_16")

    async def body() -> tuple[list[ScoreEvent], int, tuple[int, dict[str, Any]], dict[str, Any]]:
        scorer = RestScorer(gated, ScoreLimits(max_pending=1))
        async with serving(detector, scorer=scorer, token=None) as served:
            rest = asyncio.create_task(served.score(wav, token=None))
            await asyncio.to_thread(gated.entered.wait, 30)  # the REST score is inside the encoder
            busy = await served.score(wav, token=None)  # one waiting at most: 503
            url = f"ws://127.0.0.1:{served.server.port}/v1/ingest"
            async with connect(url) as ws:
                await ws.send(start_message("live"))
                await send_audio(ws, speech_like(3.0, 16000, seed=5).astype(np.float32))
                await ws.send('{"type":"stop"}')
                events = await events_until_end(ws, "live")
            still_running = int(not rest.done())
            gated.gate.set()
            answer = await rest
            return of_type(events, ScoreEvent), still_running, busy, answer[1] | {"status": answer[0]}

    scores, still_running, busy, answer = run(body(), timeout_s=90)
    assert [s.t_end for s in scores] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # every window of the stream
    assert still_running == 1  # ... all while the REST score was held inside the encoder
    assert busy[0] == 503 and "busy" in busy[1]["error"]
    assert answer["status"] == 200 and len(answer["windows"]) == 11


def test_score_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="score_max_duration_s"):
        ServerConfig(score_max_duration_s=0)
    with pytest.raises(ConfigError, match="score_max_bytes"):
        ServerConfig(score_max_bytes=10)
    with pytest.raises(ConfigError, match="max_pending"):
        ScoreLimits(max_pending=0)
    assert ScoreLimits.from_config(replace(ServerConfig(), score_max_bytes=4096)).max_bytes == 4096


def test_websocket_paths_answer_plain_http_and_unknown_paths_list_the_routes(detector: Detector) -> None:
    async def body() -> list[tuple[int, str]]:
        async with serving(detector) as served:
            answers = []
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            for path, headers in (("/v1/ingest", {}), ("/v1/ingest", bearer), ("/nope", bearer)):
                async with served.session.get(served.url(path), headers=headers) as response:
                    answers.append((response.status, await response.text()))
            return answers

    (stranger, _), (upgrade, told), (missing, listed) = run(body(), timeout_s=60)
    assert (stranger, upgrade, missing) == (401, 426, 404)
    assert "expected a WebSocket upgrade request" in told
    assert "/v1/score" in listed and "/v1/openapi.json" in listed


def test_extra_routes_are_guarded_and_keep_their_own_404() -> None:
    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such recording: r1")

    async def body() -> list[tuple[int, str]]:
        pipeline = Pipeline(FakeScorer())
        config = ServerConfig(host="127.0.0.1", port=0, token=TOKEN)
        server = SpoofwatchServer(pipeline, config, extra_routes=[web.get("/v1/thing", gone)])
        await server.start()
        try:
            answers = []
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{server.port}/v1/thing"
                for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                    async with session.get(url, headers=headers) as response:
                        answers.append((response.status, await response.text()))
            return answers
        finally:
            await server.stop()

    assert run(body()) == [
        (401, "expected Authorization: Bearer TOKEN or ?token=TOKEN\n"),
        (404, "no such recording: r1"),
    ]


def test_the_scorer_follows_a_hot_reload_of_the_pipelines_detector(detector: Detector) -> None:
    swapped = GatedDetector(detector)
    swapped.gate.set()
    serving_now: list[Detector] = [detector]
    scorer = RestScorer(detector, current=lambda: serving_now[0])
    wav = encode(clip(1.0, 16000), 16000, "WAV", "PCM_16")

    async def body() -> int:
        async with serving(detector, scorer=scorer, token=None) as served:
            serving_now[0] = swapped  # what Pipeline.use_scorer does on a reload
            return (await served.score(wav, token=None))[0]

    assert run(body(), timeout_s=60) == 200
    assert swapped.entered.is_set() and scorer.detector is swapped
