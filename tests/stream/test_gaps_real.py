"""Gaps end to end on the shipped detector, through ``/audiohook`` as Genesys sends a call:
genuine speech with a 1 s ``discarded``, a 12 s pause whose position keeps advancing
(a ping a second), and concealment inside the audio (digital silence, a packet-loss
concealment burst) raises no alarm and scores no window over filler; synthetic speech
with the same holes still alarms. Before gap-aware streaming the genuine call alarmed
(issue 33: p_spoof 0.91-0.99 on windows over the filled zeros)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import connect

import streamkit
from spoofwatch.audio.files import load_audio
from spoofwatch.audio.pcm import mulaw_encode
from spoofwatch.audio.resample import resample
from spoofwatch.config import StreamConfig
from spoofwatch.events import AlarmEvent, Event, GapEvent, ScoreEvent, StatusEvent, StreamEvent, parse_event
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.protocols.audiohook import format_duration
from waits import scaled

pytestmark = pytest.mark.real_weights

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audio"
GENUINE = EXAMPLES / "real_librispeech_1502-122615-0000.flac"
SYNTHETIC = EXAMPLES / "synthetic_espeak.flac"
SR = 8000
FRAME = 160  # 20 ms, as Genesys sends
DISCARD_AT, PAUSE_AT = 6.0, 12.0  # seconds of audio sent before each
ZEROS_AT, PLC_AT = 8.5, 10.0  # concealment inside the audio between them


@pytest.fixture(scope="module")
def detector() -> WindowScorer:
    from spoofwatch.model.artifact import load_detector

    scorer: WindowScorer = load_detector()
    return scorer


def telephone(path: Path) -> NDArray[np.float32]:
    """The clip played twice, cut to 20 s, at 8 kHz, with concealment inserted: 200 ms of
    digital silence and a 100 ms loss concealed by repeating the last 20 ms with a fade."""
    audio = resample(load_audio(path).samples, 16000, SR)
    audio = np.concatenate([audio, audio])[: 20 * SR]
    z = round(ZEROS_AT * SR)
    audio[z : z + round(0.2 * SR)] = 0.0
    p, n = round(PLC_AT * SR), round(0.1 * SR)
    last = audio[p - FRAME : p].copy()
    audio[p : p + n] = np.resize(last, n) * np.linspace(1.0, 0.0, n, dtype=np.float32)
    return audio


async def genesys_call(port: int, external: NDArray[np.float32], agent: NDArray[np.float32]) -> list[Event]:
    """The call as the reference client sends it; returns every event of its two streams."""
    watcher = await connect(f"ws://127.0.0.1:{port}/v1/scores")
    assert isinstance(parse_event(await watcher.recv()), StatusEvent)
    session_id = str(uuid.uuid4())
    seq, serverseq, position = 0, 0, 0.0

    async with connect(f"ws://127.0.0.1:{port}/audiohook") as ws:

        async def send(kind: str, params: dict[str, object]) -> dict[str, Any] | None:
            nonlocal seq, serverseq
            seq += 1
            body = {
                "version": "2",
                "id": session_id,
                "type": kind,
                "seq": seq,
                "serverseq": serverseq,
                "position": format_duration(position),
                "parameters": params,
            }
            await ws.send(json.dumps(body))
            if kind not in ("open", "ping", "close"):
                return None
            reply = json.loads(await ws.recv())
            serverseq = reply["seq"]
            return dict(reply)

        async def audio(start_s: float, end_s: float) -> None:
            nonlocal position
            a, b = round(start_s * SR), min(round(end_s * SR), len(external))
            for i in range(a, b, FRAME):
                codes = np.stack(
                    [
                        mulaw_encode(external[i : min(i + FRAME, b)]),
                        mulaw_encode(agent[i : min(i + FRAME, b)]),
                    ],
                    axis=1,
                )
                await ws.send(codes.tobytes())
                position += codes.shape[0] / SR

        media = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": SR}
        opened = await send(
            "open",
            {"organizationId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()), "media": [media]},
        )
        assert opened is not None and opened["type"] == "opened"
        await audio(0.0, DISCARD_AT)
        await send("discarded", {"start": format_duration(position), "discarded": "PT1S"})
        position += 1.0
        await audio(DISCARD_AT, PAUSE_AT)
        pause_start = position
        await send("paused", {})
        for _ in range(12):  # the position keeps running while paused
            position += 1.0
            pong = await send("ping", {})
            assert pong is not None and pong["type"] == "pong"
        await send("resumed", {"start": format_duration(pause_start), "discarded": "PT12S"})
        await audio(PAUSE_AT, len(external) / SR)
        closed = await send("close", {"reason": "end"})
        assert closed is not None and closed["type"] == "closed"
    ids = {f"{session_id}:external", f"{session_id}:internal"}
    events: list[Event] = []
    while not ids <= {e.stream for e in events if isinstance(e, StreamEvent) and e.state == "end"}:
        events.append(parse_event(await watcher.recv()))
    await watcher.close()
    return [e for e in events if getattr(e, "stream", None) in ids]


def run_call(detector: WindowScorer, external: NDArray[np.float32]) -> tuple[list[Event], list[Event]]:
    """(external's events, the genuine agent's events)."""

    async def body() -> list[Event]:
        async with streamkit.serving(streamkit.LOCAL, stream_config=StreamConfig(), scorer=detector) as (
            server,
            _,
        ):
            return await genesys_call(server.port, external, telephone(GENUINE))

    events = asyncio.run(asyncio.wait_for(body(), scaled(120)))
    ext = [e for e in events if getattr(e, "stream", "").endswith(":external")]
    agent = [e for e in events if getattr(e, "stream", "").endswith(":internal")]
    return ext, agent


# On the call's clock: audio 0-6 s, discarded 6-7 s, audio 7-13 s (digital silence at
# 9.5-9.7 s, concealment at 11.0-11.1 s), paused 13-25 s, audio 25-33 s.
FILLER = [(6.0, 7.0), (9.5, 9.7), (13.0, 25.0)]


def over_filler(score: ScoreEvent) -> bool:
    """More than 0.1 s of a hole inside the window's audio: its overlap with the holes
    less what was spliced out of its span (a 4 s window spans more only by splices)."""
    overlap = sum(max(0.0, min(score.t_end, b) - max(score.t_start, a)) for a, b in FILLER)
    return overlap - (score.t_end - score.t_start - 4.0) > 0.1


def test_genuine_speech_with_gaps_and_concealment_raises_no_alarm(detector: WindowScorer) -> None:
    for events in run_call(detector, telephone(GENUINE)):
        scores = [e for e in events if isinstance(e, ScoreEvent)]
        assert not [e for e in events if isinstance(e, AlarmEvent)], [round(s.p_spoof, 2) for s in scores]
        assert len(scores) >= 8
        assert not [s for s in scores if over_filler(s)]
        gaps = [(g.t_start, g.t_end, g.cause) for g in events if isinstance(g, GapEvent)]
        assert gaps == [(6.0, 7.0, "discarded"), (9.5, 9.7, "silence"), (13.0, 25.0, "paused")]
        assert scores[-1].t_end == pytest.approx(33.0, abs=0.01)


def test_synthetic_speech_with_the_same_gaps_still_alarms(detector: WindowScorer) -> None:
    synthetic, agent = run_call(detector, telephone(SYNTHETIC))
    alarms = [e for e in synthetic if isinstance(e, AlarmEvent) and e.state == "on"]
    assert alarms and alarms[0].t <= DISCARD_AT
    assert not [s for s in synthetic if isinstance(s, ScoreEvent) and over_filler(s)]
    assert not [e for e in agent if isinstance(e, AlarmEvent)]
