"""Stream a WAV (or FLAC, OGG...) file to spoofwatch's ``/v1/ingest`` and print the verdicts.

Start a server, then send a file, paced in real time like a live call::

    spoofwatch serve --port 8765 [--token TOKEN]
    python examples/stream_file.py examples/audio/synthetic_espeak.flac \\
        --url ws://127.0.0.1:8765 [--token TOKEN] [--stream my-call] [--fast] [--json]

The server scores the audio as it arrives and sends that stream's events back on the
same connection: one line per window score, ALARM lines, and a summary at the end.
``--fast`` sends as fast as the server takes it; ``--json`` prints the raw events.
Exit status: 0 done, 1 an alarm fired and ``--fail-on-alarm`` was given, 2 refused or
failed (bad token, unreadable file, server at its stream limit).

Needs ``websockets``, ``soundfile`` and ``numpy``. Files with more than two channels are
mixed down to mono; the server accepts 8 to 48 kHz and resamples itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

FRAME_S = 0.1  # audio per binary frame


@dataclass
class Summary:
    windows: int = 0
    max_smoothed: float = 0.0
    alarms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def ingest_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"--url: expected ws://, wss://, http:// or https://, found {base!r}")
    return urlunsplit((scheme, parts.netloc, "/v1/ingest", "", ""))


def read_pcm16(path: Path) -> tuple[NDArray[np.int16], int]:
    """Interleaved 16-bit samples (mono or stereo) and the sample rate."""
    audio, rate = sf.read(str(path), dtype="int16", always_2d=True)
    if audio.shape[1] > 2:
        audio = audio.mean(axis=1, keepdims=True).astype(np.int16)
    if len(audio) == 0:
        raise ValueError(f"{path}: expected audio samples, found an empty file")
    return np.ascontiguousarray(audio), int(rate)


def describe(event: dict[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "score":
        bar = "#" * round(20 * float(event["smoothed"]))
        return f"{event['t_start']:7.1f}-{event['t_end']:6.1f} s  p_spoof {event['smoothed']:.2f} |{bar:<20}|"
    if kind == "alarm":
        word = "*** ALARM ON: synthetic voice suspected" if event["state"] == "on" else "alarm off"
        return f"{word} at {event['t']:.1f} s (p_spoof {event['p_spoof']:.2f})"
    if kind == "error":
        return f"error {event['code']}: {event['message']}"
    return None


async def send_audio(ws: ClientConnection, audio: NDArray[np.int16], rate: int, realtime: bool) -> None:
    frame = max(1, round(FRAME_S * rate))
    started = time.monotonic()
    for start in range(0, len(audio), frame):
        await ws.send(audio[start : start + frame].astype("<i2").tobytes())
        if realtime:  # pace by the audio clock, not by sleeps that add up
            ahead = started + (start + frame) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await ws.send(json.dumps({"type": "stop"}))


async def receive_events(ws: ClientConnection, stream: str, as_json: bool, summary: Summary) -> None:
    """Print this stream's events until its end event."""
    async for message in ws:
        event = json.loads(message)
        line = message if as_json else describe(event)
        if line is not None:
            print(line, flush=True)
        kind = event.get("type")
        if kind == "score":
            summary.windows += 1
            summary.max_smoothed = max(summary.max_smoothed, float(event["smoothed"]))
        elif kind == "alarm" and event["state"] == "on":
            summary.alarms.append(float(event["t"]))
        elif kind == "error":
            summary.errors.append(f"{event['code']}: {event['message']}")
        elif kind == "stream" and event["stream"] == stream and event["state"] == "end":
            return
    raise ConnectionError("the server closed the connection before the end of the stream")


async def stream_file(
    path: Path, url: str, token: str | None, *, stream: str, realtime: bool = True, as_json: bool = False
) -> Summary:
    audio, rate = read_pcm16(path)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    summary = Summary()
    async with connect(ingest_url(url), additional_headers=headers, open_timeout=10) as ws:
        start = {
            "type": "start",
            "stream": stream,
            "encoding": "pcm_s16le",
            "sample_rate": rate,
            "channels": int(audio.shape[1]),
        }
        await ws.send(json.dumps(start))
        sending = asyncio.create_task(send_audio(ws, audio, rate, realtime), name="send")
        try:
            await receive_events(ws, stream, as_json, summary)
        finally:
            # A refused stream closes the connection: the receiver reports why; stop sending.
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sending
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="audio file (anything libsndfile reads)")
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server base URL (default %(default)s)")
    parser.add_argument("--token", help="bearer token, if the server was started with --token")
    parser.add_argument("--stream", help="stream id (default: the file name)")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not in real time")
    parser.add_argument("--json", action="store_true", help="print raw JSON events")
    parser.add_argument("--fail-on-alarm", action="store_true", help="exit 1 when an alarm fires")
    args = parser.parse_args(argv)
    stream = args.stream or args.file.name
    try:
        summary = asyncio.run(
            stream_file(
                args.file, args.url, args.token, stream=stream, realtime=not args.fast, as_json=args.json
            )
        )
    except ConnectionClosed as closed:
        reason = closed.rcvd.reason if closed.rcvd is not None else "no close frame"
        print(f"refused or dropped by the server: {reason}", file=sys.stderr)
        return 2
    except (OSError, InvalidStatus, ValueError, sf.LibsndfileError) as exc:
        print(f"stream_file: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    verdict = f"ALARM at {', '.join(f'{t:.1f} s' for t in summary.alarms)}" if summary.alarms else "no alarm"
    peak = f"max smoothed p_spoof {summary.max_smoothed:.2f}"
    out = sys.stderr if args.json else sys.stdout  # --json keeps stdout pure JSON lines
    print(f"{stream}: {summary.windows} windows scored, {peak}, {verdict}", file=out)
    if summary.errors:
        return 2
    return 1 if summary.alarms and args.fail_on_alarm else 0


if __name__ == "__main__":
    sys.exit(main())
