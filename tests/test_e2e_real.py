"""End to end on the real shipped detector: a call that turns synthetic, replayed through
the pipeline, through ``spoofwatch serve`` (WebSocket ingest + MQTT seen by mosquitto_sub)
and through ``spoofwatch listen`` on a virtual PulseAudio microphone."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from mosquitto_broker import MosquittoBroker
from spoofwatch.audio.files import load_audio
from spoofwatch.cli import main
from spoofwatch.model.artifact import detector_dir
from waits import LineReader, scaled, wait_until

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "examples" / "audio" / "real_librispeech_1502-122615-0000.flac"
FAKE = ROOT / "examples" / "audio" / "synthetic_espeak.flac"

pytestmark = [pytest.mark.real_weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def switch_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """10 s of real speech, then 10.8 s of eSpeak: returns the file and the switch time."""
    real = load_audio(REAL).samples
    fake = load_audio(FAKE).samples
    path = tmp_path_factory.mktemp("e2e") / "real_then_synthetic.wav"
    sf.write(path, np.concatenate([real, fake]), 16000)
    return path, len(real) / 16000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replayed(detector: Any, path: Path, config: Any = None) -> list[Any]:
    """Every event of ``path`` replayed as one stream through a pipeline on ``detector``."""
    from spoofwatch.stream.engine.pipeline import Pipeline
    from spoofwatch.stream.sources.file import run_file_source

    async def run() -> list[Any]:
        pipeline = Pipeline(detector, config)
        sub = pipeline.hub.subscribe(maxsize=10_000)
        worker = asyncio.create_task(pipeline.run())
        await run_file_source(pipeline, path, stream_id="call", realtime=False)
        worker.cancel()
        events = []
        while not sub.queue.empty():
            events.append(sub.queue.get_nowait())
        return events

    return asyncio.run(run())


def test_pipeline_alarm_turns_on_after_the_switch_and_not_before(switch_file: tuple[Path, float]) -> None:
    """The shipped card through the real pipeline: the alarm follows the switch to
    synthetic speech, and every live window scores what file scoring gives it, although
    the engine batches windows differently (int8-window: no batch effects). The eSpeak
    part has pauses of digital silence, which live streams treat as gaps
    (docs/protocol.md, "Gaps and pauses") and file scoring keeps: the window-for-window
    comparison runs with that rule off."""
    from spoofwatch.config import StreamConfig
    from spoofwatch.events import AlarmEvent, GapEvent, ScoreEvent
    from spoofwatch.model.artifact import load_detector
    from spoofwatch.train.clip_scoring import score_file

    path, switch_s = switch_file
    detector = load_detector()
    shipped = _replayed(detector, path)
    alarms = [e for e in shipped if isinstance(e, AlarmEvent)]
    assert alarms and alarms[0].state == "on"
    assert alarms[0].t > switch_s, f"alarm at {alarms[0].t} s, before the switch at {switch_s} s"
    assert alarms[0].t <= switch_s + 6.0
    assert all(g.cause == "silence" and g.t_start > switch_s for g in shipped if isinstance(g, GapEvent))
    events = _replayed(detector, path, StreamConfig(silence_gap_s=0.0))
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert len(scores) == 17
    offline = score_file(detector, path)
    assert [(e.t_start, e.t_end) for e in scores] == [(w.t_start, w.t_end) for w in offline.windows]
    np.testing.assert_allclose([e.score for e in scores], [w.score for w in offline.windows], atol=1e-4)


@pytest.fixture
def serve_process(
    mosquitto: MosquittoBroker, switch_file: tuple[Path, float]
) -> Iterator[tuple[int, MosquittoBroker]]:
    port = _free_port()
    path, _ = switch_file
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spoofwatch",
            "serve",
            "--port",
            str(port),
            "--mqtt",
            mosquitto.url,
            "--node",
            "e2e",
            "--source",
            f"file+fast:{path}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.2)
    yield port, mosquitto
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("serve did not stop on SIGINT")
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_serve_publishes_contract_messages_over_mqtt_and_answers_ingest(
    serve_process: tuple[int, MosquittoBroker], switch_file: tuple[Path, float]
) -> None:
    port, broker = serve_process
    path, switch_s = switch_file
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-t",
            "spoofwatch/#",
            "-v",
            "-W",
            "60",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )

    async def ingest() -> list[dict[str, object]]:
        from websockets.asyncio.client import connect

        audio, _ = sf.read(path, dtype="int16")
        received: list[dict[str, object]] = []
        async with connect(f"ws://127.0.0.1:{port}/v1/ingest") as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "start",
                        "stream": "ws-call",
                        "encoding": "pcm_s16le",
                        "sample_rate": 16000,
                        "channels": 1,
                    }
                )
            )
            for start in range(0, len(audio), 3200):
                await ws.send(audio[start : start + 3200].tobytes())
                await asyncio.sleep(0.005)
            await ws.send(json.dumps({"type": "stop"}))
            async for message in ws:
                event = json.loads(message)
                received.append(event)
                if event.get("type") == "stream" and event.get("state") == "end":
                    break
        return received

    events = asyncio.run(asyncio.wait_for(ingest(), timeout=180))
    alarms = [e for e in events if e["type"] == "alarm"]
    assert any(e["type"] == "score" for e in events)
    assert alarms and alarms[0]["state"] == "on" and float(alarms[0]["t"]) > switch_s  # type: ignore[arg-type]

    assert sub.stdout is not None
    published = LineReader(sub.stdout)
    expected = (
        "spoofwatch/e2e/availability ",
        "spoofwatch/e2e/streams/ws-call/score ",
        "spoofwatch/e2e/streams/ws-call/alarm ",
        f"spoofwatch/e2e/streams/{path.stem}/score ",
    )
    with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
        wait_until(lambda: all(published.has(topic) for topic in expected), 30, "the MQTT messages")
    sub.terminate()
    sub.wait(timeout=scaled(10))
    lines = published.text().splitlines()
    topics = [line.split(" ", 1)[0] for line in lines]
    assert "spoofwatch/e2e/availability" in topics
    assert any(t.endswith("/streams/ws-call/score") for t in topics)
    assert any(t.endswith("/streams/ws-call/alarm") for t in topics)
    file_stream = path.stem
    assert any(t == f"spoofwatch/e2e/streams/{file_stream}/score" for t in topics)
    score_line = next(line for line in lines if line.startswith("spoofwatch/e2e/streams/ws-call/score "))
    score = json.loads(score_line.split(" ", 1)[1])
    assert {
        "type",
        "v",
        "stream",
        "seq",
        "t_start",
        "t_end",
        "score",
        "p_spoof",
        "smoothed",
        "speech",
        "lag_ms",
    } <= set(score)

    # POST /v1/score answers what `spoofwatch score --json` prints for the same file.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/score?name={FAKE.name}", data=FAKE.read_bytes(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=scaled(120)) as response:
        assert response.status == 200
        rest = json.loads(response.read())
    printed = io.StringIO()
    assert main(["score", "--json", str(FAKE)], out=printed) == 0
    cli = json.loads(printed.getvalue())
    assert rest["path"] == FAKE.name and rest["label"] == cli["label"] == "spoof"
    assert [(w["t_start"], w["t_end"]) for w in rest["windows"]] == [
        (w["t_start"], w["t_end"]) for w in cli["windows"]
    ]
    # The server's detector runs one torch thread per worker: sums may round differently.
    assert [w["score"] for w in rest["windows"]] == pytest.approx(
        [w["score"] for w in cli["windows"]], abs=1e-3
    )
    assert (rest["score"], rest["p_spoof"], rest["duration_s"]) == pytest.approx(
        (cli["score"], cli["p_spoof"], cli["duration_s"]), abs=1e-3
    )


@pytest.mark.microphone
def test_listen_alarms_on_a_virtual_microphone(switch_file: tuple[Path, float]) -> None:
    from pulse import VirtualMic, pulseaudio_missing_reason

    reason = pulseaudio_missing_reason()
    if reason:
        pytest.skip(reason)
    real = load_audio(REAL).samples[-5 * 16000 :]
    fake = load_audio(FAKE).samples
    with VirtualMic() as mic:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spoofwatch", "listen"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        printed = LineReader(proc.stdout)
        try:
            # The detector is loaded and the microphone open once listen says so.
            wait_until(lambda: printed.has("listening on") or proc.poll() is not None, 120, "listen to start")
            mic.play(np.concatenate([real, fake]))
            wait_until(
                lambda: printed.has("ALARM ON") or proc.poll() is not None,
                len(real) / 16000 + len(fake) / 16000 + 30.0,
                "an alarm",
            )
        except TimeoutError:
            pass  # the assertions below say what is missing
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=scaled(30))
            out = printed.text()
    assert "listening on" in out, err
    assert "ALARM ON" in out, out + err


def test_the_resynth_card_gives_a_live_stream_the_files_remakes(
    switch_file: tuple[Path, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--detector resynth`` through the real pipeline with the real FARGAN program: every
    window the engine scores comes with exactly the window of the clip's remake that file
    scoring and training use, each 1 s block the windows cover is vocoded once (20 blocks
    for 17 windows), and the scores match the file's."""
    from spoofwatch.config import StreamConfig
    from spoofwatch.events import ScoreEvent
    from spoofwatch.model.artifact import load_detector
    from spoofwatch.model.resynthesis import remake as remake_module
    from spoofwatch.stream.core.windowing import cut_windows
    from spoofwatch.train.clip_scoring import detector_window_config, score_file
    from spoofwatch.train.extract import remade_windows

    path, _ = switch_file
    detector = load_detector(detector_dir("resynth"))
    assert detector.remake is not None
    vocoded: list[int] = []
    real_vocode = remake_module.vocode

    def counting(segment: np.ndarray, vocoder: Path) -> np.ndarray:
        vocoded.append(len(segment))
        return real_vocode(segment, vocoder)

    monkeypatch.setattr(remake_module, "vocode", counting)
    scored: list[tuple[np.ndarray, np.ndarray]] = []
    real_score = detector.score_windows

    def recording(windows: np.ndarray, remakes: np.ndarray | None = None) -> np.ndarray:
        assert remakes is not None
        scored.extend(zip(windows.copy(), remakes.copy(), strict=True))
        return real_score(windows, remakes)

    monkeypatch.setattr(detector, "score_windows", recording)

    # The digital-silence rule off: live windows are compared with the file's, which keep
    # the eSpeak part's silent pauses (docs/protocol.md, "Gaps and pauses").
    live = [
        e for e in _replayed(detector, path, StreamConfig(silence_gap_s=0.0)) if isinstance(e, ScoreEvent)
    ]
    assert len(live) == len(scored) == 17 and len(vocoded) == 20
    samples = load_audio(path).samples
    config = detector_window_config(detector)
    remakes = remade_windows(detector.remake, samples, config)
    expected = zip(cut_windows(samples, config), remakes, strict=True)
    for (window, remake), (cut, expected_remake) in zip(scored, expected, strict=True):
        assert np.array_equal(window, cut.samples)
        assert np.array_equal(remake, expected_remake)
    monkeypatch.undo()
    offline = score_file(detector, path)
    assert offline.error is None
    assert [(e.t_start, e.t_end) for e in live] == [(w.t_start, w.t_end) for w in offline.windows]
    # The engine's batches are not the file's one batch of 17; the int8-window encoder
    # scores each window alone whatever its batch (int8-all moved these by up to 0.24).
    np.testing.assert_allclose([e.score for e in live], [w.score for w in offline.windows], atol=1e-4)
