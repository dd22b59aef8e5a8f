"""Play an audio file into spoofwatch's ``/twilio`` route exactly as Twilio Media Streams would.

Try a Twilio set-up without a phone, a Twilio account or a public server::

    spoofwatch serve --port 8765 --token CHANGE-ME
    python examples/twilio/simulate_call.py examples/audio/synthetic_espeak.flac \\
        --twiml examples/twilio/stream.xml --url ws://127.0.0.1:8765

It reads the ``<Stream>`` of the TwiML snippet (route, ``track``, ``<Parameter>`` values
such as the token), then sends what Twilio sends: ``connected``, ``start`` (with the
parameters as ``customParameters``), 20 ms ``media`` messages of base64 8 kHz mu-law per
track, and ``stop``. The file is the caller (``inbound`` track); ``--callee FILE`` is
the other party (``outbound``, silence if not given). ``--url`` replaces the TwiML's
public host; ``--token`` replaces its token parameter; ``--fast`` skips real-time pacing.

Twilio ignores what the server sends back, and so does this script: watch the scores on
the dashboard (``http://127.0.0.1:8765/?token=CHANGE-ME``) or with
``examples/ws_subscriber.py``. Exit status 2 when the server refuses the call.

Needs ``websockets``, ``soundfile``, ``soxr`` and ``numpy``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

RATE = 8000
CHUNK = 160  # 20 ms at 8 kHz, Twilio's media message size
MULAW_SILENCE = 0xFF
POLICY_VIOLATION = 1008
TRACKS = {
    "inbound_track": ["inbound"],
    "outbound_track": ["outbound"],
    "both_tracks": ["inbound", "outbound"],
}


@dataclass(frozen=True)
class StreamTwiml:
    url: str
    tracks: list[str]
    parameters: dict[str, str]


def read_twiml(path: Path) -> StreamTwiml:
    """The first ``<Stream>`` of a TwiML document."""
    stream = ElementTree.parse(path).getroot().find(".//Stream")
    if stream is None or not stream.get("url"):
        raise ValueError(f"{path}: expected a <Stream url=...> element, found none")
    track = stream.get("track", "inbound_track")
    if track not in TRACKS:
        raise ValueError(f"{path}: expected track to be one of {sorted(TRACKS)}, found {track!r}")
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
    return StreamTwiml(stream.get("url", ""), TRACKS[track], parameters)


def mulaw_encode(audio: NDArray[np.float32]) -> NDArray[np.uint8]:
    """G.711 mu-law, as Twilio sends it."""
    pcm = np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int32)
    sign = (pcm < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return encoded


def telephone_audio(path: Path) -> NDArray[np.uint8]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = np.ascontiguousarray(audio.mean(axis=1), dtype=np.float32)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE).astype(np.float32)
    return mulaw_encode(mono)


def target_url(twiml_url: str, base: str | None) -> str:
    """The TwiML's URL, or its path on ``base`` (``ws://127.0.0.1:8765``) when given."""
    if base is None:
        return twiml_url
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"--url: expected ws://, wss://, http:// or https://, found {base!r}")
    return urlunsplit((scheme, parts.netloc, urlsplit(twiml_url).path or "/twilio", "", ""))


def media_message(sid: str, track: str, chunk: int, payload: bytes) -> str:
    media = {
        "track": track,
        "chunk": str(chunk),
        "timestamp": str(20 * (chunk - 1)),
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps({"event": "media", "sequenceNumber": str(chunk + 1), "streamSid": sid, "media": media})


async def send_call(
    ws: ClientConnection, sid: str, twiml: StreamTwiml, audio: dict[str, NDArray[np.uint8]], realtime: bool
) -> int:
    """Send one call; returns the number of 20 ms chunks per track."""
    call, account = "CA" + secrets.token_hex(16), "AC" + secrets.token_hex(16)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "streamSid": sid,
        "accountSid": account,
        "callSid": call,
        "tracks": twiml.tracks,
        "customParameters": twiml.parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
    }
    await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start}))
    chunks = max(-(-len(a) // CHUNK) for a in audio.values())
    started = time.monotonic()
    for chunk in range(chunks):
        for track in twiml.tracks:
            piece = audio[track][chunk * CHUNK : (chunk + 1) * CHUNK]
            piece = np.pad(piece, (0, CHUNK - len(piece)), constant_values=MULAW_SILENCE)
            await ws.send(media_message(sid, track, chunk + 1, piece.tobytes()))
        if realtime:
            ahead = started + (chunk + 1) * CHUNK / RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    stop = {"accountSid": account, "callSid": call}
    await ws.send(
        json.dumps({"event": "stop", "sequenceNumber": str(chunks + 2), "streamSid": sid, "stop": stop})
    )
    return chunks


async def simulate(
    caller: Path, callee: Path | None, twiml: StreamTwiml, url: str, *, realtime: bool = True
) -> tuple[str, float]:
    """Play the call; returns the stream SID and the seconds of audio per track."""
    inbound = telephone_audio(caller)
    outbound = telephone_audio(callee) if callee else np.full(len(inbound), MULAW_SILENCE, np.uint8)
    sid = "MZ" + secrets.token_hex(16)
    async with connect(url, open_timeout=10) as ws:
        chunks = await send_call(ws, sid, twiml, {"inbound": inbound, "outbound": outbound}, realtime)
        await ws.close()  # Twilio hangs up after stop, too
        closed = ws.protocol.close_rcvd
        if closed is not None and closed.code == POLICY_VIOLATION:
            raise PermissionError(closed.reason)
    return sid, chunks * CHUNK / RATE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("caller", type=Path, help="audio of the caller (inbound track)")
    parser.add_argument("--callee", type=Path, help="audio of the called party (outbound track)")
    here = Path(__file__).resolve().parent
    parser.add_argument("--twiml", type=Path, default=here / "stream.xml", help="TwiML with the <Stream>")
    parser.add_argument("--url", help="server base URL replacing the TwiML's host, e.g. ws://127.0.0.1:8765")
    parser.add_argument("--token", help="token replacing the TwiML's token <Parameter>")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not in real time")
    args = parser.parse_args(argv)
    try:
        twiml = read_twiml(args.twiml)
        if args.token is not None:
            twiml = StreamTwiml(twiml.url, twiml.tracks, {**twiml.parameters, "token": args.token})
        url = target_url(twiml.url, args.url)
        sid, seconds = asyncio.run(simulate(args.caller, args.callee, twiml, url, realtime=not args.fast))
    except (PermissionError, ConnectionClosed) as exc:
        print(f"the server refused the call: {exc}", file=sys.stderr)
        return 2
    except (OSError, InvalidStatus, ValueError, ElementTree.ParseError, sf.LibsndfileError) as exc:
        print(f"simulate_call: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    streams = ", ".join(f"{sid}:{t}" for t in twiml.tracks) if len(twiml.tracks) > 1 else sid
    print(f"sent {seconds:.1f} s of call audio to {url} as stream(s) {streams}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
