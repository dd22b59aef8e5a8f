"""Every script in ``examples/`` runs as written, against real servers on loopback.

Client examples run as subprocesses (``python examples/...``) against a
``SpoofwatchServer`` + ``Pipeline`` with ``FakeScorer`` (noise is bona fide, a tone is
spoof) on port 0; the MQTT subscriber against a real mosquitto fed by ``MqttSink``; the
microphone alert in-process (it needs a detector) on a virtual PulseAudio microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray
from websockets.asyncio.client import connect

import streamkit
from fakes import FakeScorer, noise, tone
from mosquitto_broker import (  # noqa: F401 - the fixtures register by being imported
    MosquittoBroker,
    mosquitto_factory_fixture,
    mosquitto_fixture,
)
from pulse import VirtualMic, portaudio_input_missing_reason, pulseaudio_missing_reason
from spoofwatch.audio.pcm import mulaw_decode
from spoofwatch.config import EngineConfig, Settings, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import AlarmEvent, Event, ScoreEvent, StatusEvent, StreamEvent, parse_event
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.server import SpoofwatchServer
from spoofwatch.stream.sinks.mqtt import MqttSink

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = sorted(p.relative_to(REPO).as_posix() for p in EXAMPLES.rglob("*.py"))
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
TOKEN = "examples-s3cret"
DEADLINE_S = 20.0


def run(body: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(DEADLINE_S):
            return await body

    return asyncio.run(bounded(), debug=True)


def load_example(relative: str) -> ModuleType:
    """Import an example script as a module (examples/ is not a package)."""
    path = REPO / relative
    name = "example_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def serving(
    token: str | None = None,
) -> contextlib.AbstractAsyncContextManager[tuple[SpoofwatchServer, Pipeline]]:
    return streamkit.serving(replace(streamkit.LOCAL, token=token), ENGINE, stream_config=CFG)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def example_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


async def start_example(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / script),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=example_env(),
        cwd=REPO,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 15.0) -> Finished:
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"example still running after {timeout} s; stderr:\n{err.decode()}") from None
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def run_example(script: str, *args: str, timeout: float = 15.0) -> Finished:
    return await finish(await start_example(script, *args), timeout)


async def read_line(stream: asyncio.StreamReader | None, what: str) -> str:
    assert stream is not None
    async with asyncio.timeout(10):
        line = await stream.readline()
    assert line, f"expected {what}, found the end of the output"
    return line.decode()


def noise_then_tone_wav(path: Path, noise_s: float = 3.0, tone_s: float = 4.0, rate: int = 16000) -> Path:
    sf.write(path, np.concatenate([noise(noise_s, rate), tone(tone_s, rate)]), rate, subtype="PCM_16")
    return path


def s16(audio: NDArray[np.float32]) -> bytes:
    return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()


async def ingest(port: int, stream: str, audio: NDArray[np.float32], token: str | None = None) -> None:
    url = f"ws://127.0.0.1:{port}/v1/ingest" + (f"?token={token}" if token else "")
    async with connect(url) as ws:
        await ws.send(
            json.dumps({"type": "start", "stream": stream, "encoding": "pcm_s16le", "sample_rate": 16000})
        )
        for start in range(0, len(audio), 1600):
            await ws.send(s16(audio[start : start + 1600]))
        await ws.send('{"type":"stop"}')
        async for message in ws:
            event = parse_event(message)
            if isinstance(event, StreamEvent) and event.state == "end":
                return


def events_of(stdout: str) -> list[Event]:
    return [parse_event(line) for line in stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- every script


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_example_says_how_to_run_it_and_answers_help(script: str) -> None:
    module_doc = load_example(script).__doc__ or ""
    assert f"python {script}" in module_doc, f"{script}: expected its docstring to show how to run it"
    finished = run(run_example(script, "--help"))
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("usage: ")


# ---------------------------------------------------------------- stream_file.py


def test_stream_file_sends_a_wav_and_fails_on_the_alarm(tmp_path: Path) -> None:
    wav = noise_then_tone_wav(tmp_path / "turns_synthetic.wav")

    async def body() -> Finished:
        async with serving(TOKEN) as (server, pipeline):
            args = ["--url", f"ws://127.0.0.1:{server.port}", "--token", TOKEN]
            finished = await run_example(
                "examples/stream_file.py",
                str(wav),
                *args,
                "--stream",
                "call-7",
                "--fast",
                "--json",
                "--fail-on-alarm",
            )
            assert not pipeline.streams
            return finished

    finished = run(body())
    assert finished.returncode == 1, finished.stderr  # --fail-on-alarm and an alarm fired
    events = events_of(finished.stdout)
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert [s.seq for s in scores] == list(range(13))  # (7 s - 1 s) / 0.5 s + 1
    alarms = [e for e in events if isinstance(e, AlarmEvent)]
    assert alarms[0].state == "on" and alarms[0].stream == "call-7" and 3.0 < alarms[0].t <= 5.0
    assert events[-1] == StreamEvent("call-7", "end", 16000, "ws_ingest")
    assert "call-7: 13 windows scored" in finished.stderr and "ALARM at" in finished.stderr


def test_stream_file_paces_in_real_time_and_passes_a_genuine_stereo_file(tmp_path: Path) -> None:
    wav = tmp_path / "genuine.wav"
    # Full-band noise: at 8 kHz the upsampled spectrum would be half empty, which
    # FakeScorer (spectral flatness) calls tonal, i.e. spoof.
    stereo = np.stack([noise(1.5, 22050, seed=4), noise(1.5, 22050, seed=5)], axis=1)
    sf.write(wav, stereo, 22050, subtype="PCM_16")

    async def body() -> tuple[Finished, float]:
        async with serving() as (server, _):
            started = time.monotonic()
            finished = await run_example(
                "examples/stream_file.py", str(wav), "--url", f"http://127.0.0.1:{server.port}"
            )
            return finished, time.monotonic() - started

    finished, elapsed = run(body())
    assert finished.returncode == 0, finished.stderr
    assert elapsed >= 1.4, f"expected 1.5 s of audio paced in real time, took {elapsed:.2f} s"
    lines = finished.stdout.splitlines()
    assert sum("s  p_spoof" in line for line in lines) == 2  # 1.5 s: windows ending at 1.0 and 1.5 s
    pattern = r"genuine\.wav: 2 windows scored, max smoothed p_spoof (\d\.\d\d), no alarm"
    summary = re.fullmatch(pattern, lines[-1])
    assert summary is not None, lines[-1]
    assert float(summary.group(1)) < CFG.alarm_levels()[0]


def test_stream_file_with_a_wrong_token_exits_2_naming_the_refusal(tmp_path: Path) -> None:
    wav = noise_then_tone_wav(tmp_path / "x.wav", 1.0, 0.5)

    async def body() -> Finished:
        async with serving(TOKEN) as (server, pipeline):
            finished = await run_example(
                "examples/stream_file.py",
                str(wav),
                "--url",
                f"ws://127.0.0.1:{server.port}",
                "--token",
                "wrong",
            )
            assert not pipeline.streams
            return finished

    finished = run(body())
    assert finished.returncode == 2
    assert "unauthorized" in finished.stderr


# ---------------------------------------------------------------- ws_subscriber.py


def test_ws_subscriber_prints_live_events_and_stops_at_the_alarm() -> None:
    async def body() -> Finished:
        async with serving(TOKEN) as (server, _):
            url = f"ws://127.0.0.1:{server.port}"
            process = await start_example(
                "examples/ws_subscriber.py", "--url", url, "--token", TOKEN, "--json", "--until-alarm"
            )
            first = await read_line(process.stdout, "the status event")
            assert isinstance(parse_event(first), StatusEvent)  # subscribed before any audio
            await ingest(server.port, "call-9", np.concatenate([noise(3.0), tone(3.0)]), TOKEN)
            finished = await finish(process)
            finished.stdout = first + finished.stdout
            return finished

    finished = run(body())
    assert finished.returncode == 0, finished.stderr
    events = events_of(finished.stdout)
    assert StreamEvent("call-9", "start", 16000, "ws_ingest") in events
    scores = [e for e in events if isinstance(e, ScoreEvent)]
    assert scores and all(s.stream == "call-9" for s in scores)
    assert isinstance(events[-1], AlarmEvent) and events[-1].state == "on"  # it stopped at the alarm
    assert all(s.t_end > 3.0 for s in scores if s.smoothed >= 0.5)


def test_ws_subscriber_refused_token_exits_2_and_human_lines_read_well() -> None:
    async def body() -> Finished:
        async with serving(TOKEN) as (server, _):
            return await run_example("examples/ws_subscriber.py", "--url", f"ws://127.0.0.1:{server.port}")

    finished = run(body())
    assert finished.returncode == 2 and "unauthorized" in finished.stderr
    describe = load_example("examples/ws_subscriber.py").describe
    line = describe({"type": "alarm", "v": 1, "stream": "c1", "state": "on", "t": 4.5, "p_spoof": 0.91})
    assert line == "c1 ALARM ON  at 4.5 s (p_spoof 0.91)"


# ---------------------------------------------------------------- mqtt_alarm_subscriber.py


def test_mqtt_alarm_subscriber_prints_the_alarm_and_runs_the_command(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    fired = tmp_path / "fired.txt"
    command = f'echo "$SPOOFWATCH_NODE $SPOOFWATCH_STREAM $SPOOFWATCH_P_SPOOF" > {shlex.quote(str(fired))}'

    async def body() -> Finished:
        pipeline = Pipeline(FakeScorer(window_s=1.0), CFG, ENGINE, node="edge-1")
        sink = MqttSink(pipeline.hub, mosquitto.url, node="edge-1")
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(pipeline.run()), group.create_task(sink.run())]
            while not sink.connected:
                await asyncio.sleep(0.02)
            process = await start_example(
                "examples/mqtt_alarm_subscriber.py",
                "--url",
                mosquitto.url,
                "--json",
                "--until-alarm",
                "--on-alarm",
                command,
            )
            assert "subscribed to spoofwatch/+/streams/+/alarm" in await read_line(
                process.stderr, "subscribed"
            )
            online = await read_line(process.stdout, "the node's availability")
            handle = pipeline.open_stream("call/1", source="test", sample_rate=16000)
            await handle.feed_wait(np.concatenate([noise(3.0), tone(3.0)]))
            await handle.close()
            finished = await finish(process)
            finished.stdout = online + finished.stdout
            for task in tasks:
                task.cancel()
        return finished

    finished = run(body())
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == "node edge-1 is online"
    alarm = json.loads(lines[-1])
    assert alarm["topic"] == "spoofwatch/edge-1/streams/call_1/alarm"
    assert alarm["state"] == "on" and alarm["stream"] == "call/1" and alarm["p_spoof"] >= 0.5
    node, stream, p_spoof = fired.read_text().split()
    assert (node, stream, float(p_spoof)) == ("edge-1", "call/1", alarm["p_spoof"])


# ---------------------------------------------------------------- mic_alert.py


@pytest.fixture
def virtual_mic() -> Iterator[VirtualMic]:
    reason = pulseaudio_missing_reason()
    if reason:
        pytest.skip(reason)
    with VirtualMic() as mic:
        reason = portaudio_input_missing_reason()
        if reason:
            pytest.skip(reason)
        yield mic


def test_mic_alert_runs_the_command_when_the_microphone_turns_synthetic(
    virtual_mic: VirtualMic, tmp_path: Path
) -> None:
    example = load_example("examples/mic_alert.py")
    fired = tmp_path / "fired.txt"
    command = f'echo "$SPOOFWATCH_STREAM $SPOOFWATCH_T" > {shlex.quote(str(fired))}'
    out = io.StringIO()
    settings = Settings(stream=CFG, engine=EngineConfig(max_batch=4, max_wait_ms=5))
    virtual_mic.play(np.concatenate([noise(2.5), tone(3.0)]))
    run(example.watch_microphone(FakeScorer(), settings, on_alarm=command, until_alarm=True, out=out))
    text = out.getvalue()
    assert "*** ALARM ON: synthetic voice suspected on mic" in text
    assert text.index("spoof [") < text.index("ALARM ON")  # score lines came first
    stream, t = fired.read_text().split()
    assert stream == "mic" and 2.5 < float(t) < 5.5


def test_mic_alert_names_the_devices_when_the_microphone_does_not_exist(virtual_mic: VirtualMic) -> None:
    example = load_example("examples/mic_alert.py")
    with pytest.raises(ConfigError, match="no-such-microphone") as refused:
        run(example.watch_microphone(FakeScorer(), Settings(stream=CFG), device="no-such-microphone"))
    assert "available input devices" in str(refused.value)


# ---------------------------------------------------------------- twilio/


def test_twilio_snippet_forks_both_tracks_to_the_twilio_route_with_a_token() -> None:
    root = ElementTree.parse(EXAMPLES / "twilio" / "stream.xml").getroot()
    assert root.tag == "Response"
    stream = root.find("./Start/Stream")
    assert stream is not None, "expected <Response><Start><Stream>"
    url = urlsplit(stream.get("url", ""))
    assert url.scheme == "wss" and url.path == "/twilio" and not url.query  # Twilio drops queries
    assert stream.get("track") == "both_tracks"
    assert {p.get("name"): p.get("value") for p in stream.iter("Parameter")} == {"token": "CHANGE-ME"}


def test_simulated_call_from_the_snippet_is_scored_per_party(tmp_path: Path) -> None:
    caller = noise_then_tone_wav(tmp_path / "caller.wav", 2.0, 3.0)
    twiml_token = load_example("examples/twilio/simulate_call.py").read_twiml(
        EXAMPLES / "twilio" / "stream.xml"
    )

    async def body() -> tuple[Finished, list[Event]]:
        async with serving(twiml_token.parameters["token"]) as (server, _):
            watch = f"ws://127.0.0.1:{server.port}/v1/scores?token={twiml_token.parameters['token']}"
            async with connect(watch) as watcher:
                assert isinstance(parse_event(await watcher.recv()), StatusEvent)
                finished = await run_example(
                    "examples/twilio/simulate_call.py",
                    str(caller),
                    "--url",
                    f"ws://127.0.0.1:{server.port}",
                    "--fast",
                )
                assert finished.returncode == 0, finished.stderr
                events: list[Event] = []
                while sum(isinstance(e, StreamEvent) and e.state == "end" for e in events) < 2:
                    events.append(parse_event(await watcher.recv()))
            return finished, events

    finished, events = run(body())
    starts = {e.stream for e in events if isinstance(e, StreamEvent) and e.state == "start"}
    sid = next(iter(starts)).split(":")[0]
    assert sid.startswith("MZ") and starts == {f"{sid}:inbound", f"{sid}:outbound"}
    assert all(e.source == "twilio" and e.sample_rate == 8000 for e in events if isinstance(e, StreamEvent))
    alarms = [e for e in events if isinstance(e, AlarmEvent) and e.state == "on"]
    assert [a.stream for a in alarms] == [f"{sid}:inbound"]  # the caller turned synthetic; silence did not
    assert "sent 5.0 s of call audio" in finished.stdout and f"{sid}:outbound" in finished.stdout


def test_simulated_call_with_a_wrong_token_is_refused(tmp_path: Path) -> None:
    caller = noise_then_tone_wav(tmp_path / "caller.wav", 1.0, 0.5)

    async def body() -> Finished:
        async with serving(TOKEN) as (server, pipeline):
            finished = await run_example(
                "examples/twilio/simulate_call.py",
                str(caller),
                "--url",
                f"ws://127.0.0.1:{server.port}",
                # Paced like Twilio: a --fast flood before the refusal sits unread in the
                # server, which then waits its close timeout (10 s) for our close frame.
            )
            assert not pipeline.streams
            return finished

    finished = run(body())
    assert finished.returncode == 2 and "unauthorized" in finished.stderr


def test_simulated_call_encodes_g711_mulaw_that_spoofwatch_decodes() -> None:
    encode = load_example("examples/twilio/simulate_call.py").mulaw_encode
    x = np.linspace(-1.0, 0.99997, 40001).astype(np.float32)
    decoded = mulaw_decode(encode(x))
    # mu-law: error grows with amplitude, about half the coarsest step (1024 / 32768, plus
    # the bias's rounding) below the largest code (32124 / 32768), which clips the rest
    loud = np.abs(x) > 32124 / 32768
    assert np.max(np.abs(decoded[~loud] - x[~loud])) <= (512 + 16) / 32768
    assert np.all(np.abs(decoded[loud]) == np.float32(32124 / 32768))
    quiet = np.abs(x) < 0.01
    assert np.max(np.abs(decoded[quiet] - x[quiet])) <= 16 / 32768
