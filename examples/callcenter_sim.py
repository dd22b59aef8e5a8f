"""Simulate a call center pushing live calls into a running spoofwatch server.

N concurrent calls, each spoken through one of the telephony protocols spoofwatch accepts
(Genesys AudioHook, jambonz ``listen``, Asterisk AudioSocket, Twilio Media Streams with
both tracks), carry 8 kHz G.711 mu-law audio built from corpus files: the customer side
starts with bona fide speech and, on some calls, switches to synthetic speech mid-call;
the agent side (where the protocol has one) stays bona fide. A ``/v1/scores`` subscriber
collects the server's events; at the end the script prints, per call, whether the
customer was flagged and how many seconds of call audio after the synthetic speech began.

Start a server first, for example::

    spoofwatch serve --port 8765 --audiosocket-port 9092

then::

    python examples/callcenter_sim.py --calls 20                      # real time
    python examples/callcenter_sim.py --calls 6 --speed 0 --json      # as fast as possible

Behind a load balancer (docs/deploy.md), point ``--url`` at it and ``--watch`` at one
node's ``/v1/cluster`` (``serve --cluster-view``), which relays the events of every node;
each call's summary then names the node that took it.

``--speed`` is a multiple of real time (``0`` = no pacing). Faster than real time, a
saturated server drops windows (``dropped_windows`` in its status events) rather than
falling behind, so compare detection delays at ``--speed 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from spoofwatch import load_audio, mulaw_decode, mulaw_encode

RATE = 8000
AUDIO_DIR = Path(__file__).resolve().parent / "audio"
DEFAULT_BONA_FIDE = [AUDIO_DIR / "real_librispeech_1502-122615-0000.flac"]
DEFAULT_SYNTHETIC = [AUDIO_DIR / "synthetic_espeak.flac"]
PROTOCOLS = ("audiohook", "jambonz", "audiosocket", "twilio")
Audio = NDArray[np.float32]


# --- the calls ------------------------------------------------------------------------


@dataclass
class Call:
    index: int
    protocol: str
    customer: Audio  # 8 kHz, already through the G.711 channel
    agent: Audio
    switch_s: float | None  # where the synthetic speech begins, None for bona fide calls
    customer_stream: str = ""
    agent_stream: str | None = None
    refused: str | None = None
    failed: str | None = None
    alarms: list[float] = field(default_factory=list)  # customer alarm-on times (stream seconds)
    node: str | None = None  # the node that scored it (from a /v1/cluster watch)
    scores: int = 0  # score events of the customer stream
    windows: list[tuple[float, float]] = field(default_factory=list)  # (t_end, score), --keep-scores
    agent_alarms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def flagged_at(self) -> float | None:
        """The first alarm after the synthetic speech began."""
        if self.switch_s is None:
            return None
        return next((t for t in self.alarms if t > self.switch_s), None)

    @property
    def delay_s(self) -> float | None:
        flagged = self.flagged_at
        return None if flagged is None or self.switch_s is None else flagged - self.switch_s

    @property
    def false_alarm(self) -> bool:
        """An alarm while the customer was still bona fide."""
        limit = self.switch_s if self.switch_s is not None else float("inf")
        return any(t <= limit for t in self.alarms)

    def summary(self) -> dict[str, Any]:
        return {
            "call": self.index,
            "protocol": self.protocol,
            "stream": self.customer_stream,
            "duration_s": round(len(self.customer) / RATE, 3),
            "synthetic_from_s": self.switch_s,
            "flagged": self.flagged_at is not None,
            "delay_s": _round(self.delay_s),
            "false_alarm": self.false_alarm,
            "agent_alarm": bool(self.agent_alarms),
            "refused": self.refused,
            "failed": self.failed,
            "errors": self.errors,
            "node": self.node,
            "scores": self.scores,
            **({"windows": self.windows} if self.windows else {}),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def telephone(audio: Audio) -> Audio:
    """The G.711 mu-law channel every call goes through."""
    return mulaw_decode(mulaw_encode(np.clip(audio, -1.0, 1.0)))


def load_clips(paths: Sequence[Path | str]) -> list[Audio]:
    return [load_audio(path, RATE).samples for path in paths]


def rotated(clip: Audio, rng: random.Random) -> Audio:
    return np.roll(clip, rng.randrange(len(clip))) if len(clip) else clip


def plan_calls(
    n: int,
    protocols: Sequence[str],
    bona_fide: list[Audio],
    synthetic: list[Audio],
    synthetic_fraction: float,
    seed: int,
) -> list[Call]:
    """Calls alternate protocols; a shuffled ``synthetic_fraction`` of them switch mid-call."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    switching = set(order[: round(n * synthetic_fraction)])
    calls = []
    for index in range(n):
        real = rotated(bona_fide[index % len(bona_fide)], rng)
        if index in switching:
            fake = synthetic[index % len(synthetic)]
            customer, switch_s = np.concatenate([real, fake]), len(real) / RATE
        else:
            customer, switch_s = real, None
        agent = rotated(bona_fide[(index + 1) % len(bona_fide)], rng)
        agent = np.resize(agent, len(customer)).astype(np.float32)
        calls.append(
            Call(index, protocols[index % len(protocols)], telephone(customer), telephone(agent), switch_s)
        )
    return calls


# --- pacing ---------------------------------------------------------------------------


class Pacer:
    """Deadlines from one start time, so late wake-ups never accumulate drift."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start = time.monotonic()

    async def until(self, audio_s: float) -> None:
        if self.speed <= 0:
            await asyncio.sleep(0)
            return
        delay = self.start + audio_s / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def frames(call: Call, frame: int) -> list[tuple[float, Audio, Audio]]:
    """(end time, customer chunk, agent chunk) per frame."""
    return [
        (
            min(start + frame, len(call.customer)) / RATE,
            call.customer[start : start + frame],
            call.agent[start : start + frame],
        )
        for start in range(0, len(call.customer), frame)
    ]


def s16(audio: Audio) -> bytes:
    return np.clip(np.rint(audio * 32768), -32768, 32767).astype("<i2").tobytes()


# --- protocol clients -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str  # ws://host:port
    audiosocket: tuple[str, int]
    token: str | None
    speed: float
    frame: int  # samples per frame

    def ws_url(self, path: str, **query: str) -> str:
        params = dict(query)
        if self.token:
            params["token"] = self.token
        tail = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.url.rstrip('/')}{path}" + (f"?{tail}" if tail else "")


async def audiohook_call(call: Call, target: Target) -> None:
    session = str(uuid.uuid4())
    call.customer_stream, call.agent_stream = f"{session}:external", f"{session}:internal"
    headers = {"X-API-KEY": target.token} if target.token else None
    seq, serverseq, position = 0, 0, 0.0

    def message(kind: str, parameters: dict[str, Any]) -> str:
        nonlocal seq
        seq += 1
        return json.dumps(
            {
                "version": "2",
                "id": session,
                "type": kind,
                "seq": seq,
                "serverseq": serverseq,
                "position": f"PT{position:.3f}S",
                "parameters": parameters,
            }
        )

    async def receive(ws: ClientConnection) -> dict[str, Any]:
        nonlocal serverseq
        reply: dict[str, Any] = json.loads(await ws.recv())
        serverseq = reply["seq"]
        return reply

    async with connect(target.ws_url("/audiohook"), additional_headers=headers) as ws:
        await ws.send(
            message(
                "open",
                {
                    "organizationId": str(uuid.uuid4()),
                    "conversationId": str(uuid.uuid4()),
                    "participant": {
                        "id": str(uuid.uuid4()),
                        "ani": f"+1555000{call.index:04d}",
                        "aniName": "",
                        "dnis": "+15550100",
                    },
                    "media": [
                        {
                            "type": "audio",
                            "format": "PCMU",
                            "channels": ["external", "internal"],
                            "rate": RATE,
                        }
                    ],
                },
            )
        )
        reply = await receive(ws)
        if reply["type"] == "disconnect":
            call.refused = reply["parameters"].get("info", reply["parameters"]["reason"])
            await ws.send(message("close", {"reason": "disconnect"}))
            with contextlib.suppress(ConnectionClosed):
                await receive(ws)
            return
        pacer = Pacer(target.speed)
        for end_s, customer, agent in frames(call, target.frame):
            await ws.send(np.stack([mulaw_encode(customer), mulaw_encode(agent)], axis=1).tobytes())
            position = end_s
            await pacer.until(end_s)
        await ws.send(message("close", {"reason": "end"}))
        while (await receive(ws))["type"] != "closed":
            pass


async def jambonz_call(call: Call, target: Target) -> None:
    call_sid = f"sim-{call.index}-{uuid.uuid4().hex[:8]}"
    call.customer_stream, call.agent_stream = f"{call_sid}:caller", f"{call_sid}:callee"
    url = target.ws_url("/jambonz")
    async with connect(url, subprotocols=[Subprotocol("audio.jambonz.org")]) as ws:
        await ws.send(
            json.dumps(
                {
                    "callSid": call_sid,
                    "direction": "inbound",
                    "from": "+15550001",
                    "to": "+15550100",
                    "sampleRate": RATE,
                    "mixType": "stereo",
                }
            )
        )
        pacer = Pacer(target.speed)
        with contextlib.suppress(ConnectionClosed):  # a refusal closes the socket under us
            for end_s, customer, agent in frames(call, target.frame):
                await ws.send(s16(np.stack([customer, agent], axis=1)))
                await pacer.until(end_s)
    note_refusal(call, ws)


def note_refusal(call: Call, ws: ClientConnection) -> None:
    """A server that closed with anything but a normal closure refused the call."""
    if ws.close_code not in (1000, 1001, None):
        call.refused = ws.close_reason or f"closed with code {ws.close_code}"


async def audiosocket_call(call: Call, target: Target) -> None:
    call_id = uuid.uuid4()
    call.customer_stream = str(call_id)
    reader, writer = await asyncio.open_connection(*target.audiosocket)
    replies: list[bytes] = []

    async def read_replies() -> None:
        while data := await reader.read(65536):
            replies.append(data)

    listener = asyncio.create_task(read_replies())
    try:
        writer.write(b"\x01\x00\x10" + call_id.bytes)
        pacer = Pacer(target.speed)
        for end_s, customer, _ in frames(call, target.frame):
            if replies:  # the server only speaks to refuse: an error frame and a hangup
                break
            payload = s16(customer)
            writer.write(b"\x10" + len(payload).to_bytes(2, "big") + payload)
            await writer.drain()
            await pacer.until(end_s)
        writer.write(b"\x00\x00\x00")
        await writer.drain()
        await asyncio.wait_for(listener, timeout=10)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        listener.cancel()
        writer.close()
    data = b"".join(replies)
    if data[:1] == b"\xff":
        call.refused = data[3 : 3 + int.from_bytes(data[1:3], "big")].decode(errors="replace")


async def twilio_call(call: Call, target: Target) -> None:
    sid = f"MZ{uuid.uuid4().hex}"
    call.customer_stream, call.agent_stream = f"{sid}:inbound", f"{sid}:outbound"
    async with connect(f"{target.url.rstrip('/')}/twilio") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": sid,
                    "start": {
                        "streamSid": sid,
                        "accountSid": "ACsim",
                        "callSid": f"CA{uuid.uuid4().hex}",
                        "tracks": ["inbound", "outbound"],
                        "customParameters": {"token": target.token or ""},
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                    },
                }
            )
        )
        pacer, sequence = Pacer(target.speed), 1
        with contextlib.suppress(ConnectionClosed):
            for chunk, (end_s, customer, agent) in enumerate(frames(call, target.frame), start=1):
                for track, audio in (("inbound", customer), ("outbound", agent)):
                    sequence += 1
                    payload = base64.b64encode(mulaw_encode(audio).tobytes()).decode()
                    await ws.send(
                        json.dumps(
                            {
                                "event": "media",
                                "sequenceNumber": str(sequence),
                                "streamSid": sid,
                                "media": {
                                    "track": track,
                                    "chunk": str(chunk),
                                    "timestamp": str(round(end_s * 1000)),
                                    "payload": payload,
                                },
                            }
                        )
                    )
                await pacer.until(end_s)
            await ws.send(
                json.dumps(
                    {
                        "event": "stop",
                        "sequenceNumber": str(sequence + 1),
                        "streamSid": sid,
                        "stop": {"accountSid": "ACsim", "callSid": "CAsim"},
                    }
                )
            )
    note_refusal(call, ws)


CLIENTS: dict[str, Callable[[Call, Target], Awaitable[None]]] = {
    "audiohook": audiohook_call,
    "jambonz": jambonz_call,
    "audiosocket": audiosocket_call,
    "twilio": twilio_call,
}


# --- events ---------------------------------------------------------------------------


class Watcher:
    """One ``/v1/scores`` subscription: alarms and errors per stream, and which streams ended."""

    def __init__(self) -> None:
        self.alarms: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.ended: set[str] = set()
        self.nodes: dict[str, str] = {}  # stream -> node, where events carry one (/v1/cluster)
        self.scores: dict[str, int] = {}
        self.windows: dict[str, list[tuple[float, float]]] = {}
        self.max_dropped = 0
        self.changed = asyncio.Event()

    async def run(self, ws: ClientConnection) -> None:
        async for text in ws:
            event = json.loads(text)
            stream = event.get("stream")
            if stream is not None and "node" in event:
                self.nodes.setdefault(stream, event["node"])
            if event["type"] == "score":
                self.scores[stream] = self.scores.get(stream, 0) + 1
                self.windows.setdefault(stream, []).append((event["t_end"], event["score"]))
            elif event["type"] == "alarm" and event["state"] == "on":
                self.alarms.setdefault(stream, []).append(event["t"])
            elif event["type"] == "error" and stream is not None:
                self.errors.setdefault(stream, []).append(f"{event['code']}: {event['message']}")
            elif event["type"] == "stream" and event["state"] == "end":
                self.ended.add(stream)
                self.changed.set()
            elif event["type"] == "status":
                self.max_dropped = max(self.max_dropped, event["dropped_windows"])
            elif event["type"] == "availability":  # /v1/cluster: a node came or went
                self.changed.set()

    async def wait_ended(self, streams: set[str], timeout_s: float) -> set[str]:
        """The streams that have not ended when ``timeout_s`` runs out."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not streams <= self.ended:
                    self.changed.clear()
                    await self.changed.wait()
        return streams - self.ended


async def place_call(call: Call, target: Target) -> None:
    try:
        await CLIENTS[call.protocol](call, target)
    except (OSError, ConnectionClosed, TimeoutError, KeyError, ValueError) as exc:
        call.failed = f"{exc.__class__.__name__}: {exc}"


# --- report ---------------------------------------------------------------------------


def report(calls: list[Call], elapsed_s: float, dropped: int, out: TextIO) -> dict[str, Any]:
    print(
        f"{'call':>4}  {'protocol':<11}  {'synthetic at':>12}  {'flagged':>7}  {'delay':>7}  notes", file=out
    )
    for call in calls:
        switch = f"{call.switch_s:.1f} s" if call.switch_s is not None else "-"
        delay = f"{call.delay_s:.1f} s" if call.delay_s is not None else "-"
        notes = []
        if call.refused:
            notes.append(f"refused: {call.refused}")
        if call.failed:
            notes.append(f"failed: {call.failed}")
        if call.false_alarm:
            early = [t for t in call.alarms if call.switch_s is None or t <= call.switch_s]
            notes.append(f"false alarm at {', '.join(f'{t:.1f}' for t in early)} s")
        if call.agent_alarms:
            notes.append("agent side flagged")
        flagged = "-" if call.refused or call.failed else "yes" if call.flagged_at is not None else "no"
        row = f"{call.index:>4}  {call.protocol:<11}  {switch:>12}  {flagged:>7}  {delay:>7}"
        print(f"{row}  {'; '.join(notes)}", file=out)
    answered = [c for c in calls if not (c.refused or c.failed)]
    synthetic = [c for c in answered if c.switch_s is not None]
    delays = [c.delay_s for c in synthetic if c.delay_s is not None]
    summary: dict[str, Any] = {
        "calls": len(calls),
        "answered": len(answered),
        "refused": sum(bool(c.refused) for c in calls),
        "failed": sum(bool(c.failed) for c in calls),
        "synthetic_calls": len(synthetic),
        "detected": len(delays),
        "missed": len(synthetic) - len(delays),
        "false_alarm_calls": sum(c.false_alarm for c in answered),
        "agent_alarm_calls": sum(bool(c.agent_alarms) for c in answered),
        "median_delay_s": _round(statistics.median(delays)) if delays else None,
        "max_delay_s": _round(max(delays)) if delays else None,
        "dropped_windows": dropped,
        "elapsed_s": round(elapsed_s, 2),
        "per_call": [c.summary() for c in calls],
    }
    print(
        f"\n{summary['detected']}/{len(synthetic)} synthetic calls flagged"
        + (
            f", median delay {summary['median_delay_s']:.1f} s, max {summary['max_delay_s']:.1f} s"
            if delays
            else ""
        )
        + f"; {summary['false_alarm_calls']} of {len(answered)} answered calls with a false alarm"
        + f"; {summary['refused']} refused, {summary['failed']} failed; {elapsed_s:.1f} s",
        file=out,
    )
    return summary


# --- entry points ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="the server's WebSocket base URL")
    parser.add_argument(
        "--audiosocket", metavar="HOST:PORT", help="AudioSocket address (default: the URL's host, port 9092)"
    )
    parser.add_argument("--calls", type=int, default=6, help="concurrent calls (default 6)")
    parser.add_argument(
        "--protocols",
        default=",".join(PROTOCOLS),
        help=f"comma-separated, taken in turn (default {','.join(PROTOCOLS)})",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="multiple of real time; 0 = as fast as possible"
    )
    parser.add_argument(
        "--synthetic-fraction", type=float, default=0.5, help="share of calls that switch to synthetic speech"
    )
    parser.add_argument(
        "--bona-fide", nargs="+", default=DEFAULT_BONA_FIDE, metavar="FILE", help="bona fide speech files"
    )
    parser.add_argument(
        "--synthetic", nargs="+", default=DEFAULT_SYNTHETIC, metavar="FILE", help="synthetic speech files"
    )
    parser.add_argument("--frame-ms", type=int, default=20, help="audio per message (default 20 ms)")
    parser.add_argument("--token", help="the server's bearer token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stagger-s", type=float, default=0.05, help="seconds between call starts")
    parser.add_argument("--json", action="store_true", help="last line of stdout: a JSON summary")
    parser.add_argument(
        "--watch",
        metavar="URL",
        help="events to watch (default: URL/v1/scores); a node's ws://HOST:PORT/v1/cluster sees every node",
    )
    parser.add_argument(
        "--keep-scores", action="store_true", help="the summary lists each call's (t_end, score) windows"
    )
    args = parser.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown or not protocols:
        parser.error(f"--protocols: expected some of {', '.join(PROTOCOLS)}, found {args.protocols!r}")
    if args.calls < 1 or not 0 <= args.synthetic_fraction <= 1 or args.speed < 0 or args.frame_ms < 1:
        parser.error("expected --calls >= 1, --synthetic-fraction in 0..1, --speed >= 0 and --frame-ms >= 1")
    args.protocols = protocols
    return args


async def simulate(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> dict[str, Any]:
    args = parse_args(argv)
    host = urlsplit(args.url).hostname or "127.0.0.1"
    socket_host, _, socket_port = (args.audiosocket or f"{host}:9092").rpartition(":")
    target = Target(
        args.url, (socket_host, int(socket_port)), args.token, args.speed, args.frame_ms * RATE // 1000
    )
    bona_fide, synthetic = load_clips(args.bona_fide), load_clips(args.synthetic)
    calls = plan_calls(args.calls, args.protocols, bona_fide, synthetic, args.synthetic_fraction, args.seed)
    watcher = Watcher()
    started = time.monotonic()
    watch = target.ws_url("/v1/scores")
    if args.watch:
        watch = args.watch + (f"{'&' if '?' in args.watch else '?'}token={args.token}" if args.token else "")
    async with connect(watch, max_queue=None) as scores:
        json.loads(await scores.recv())  # the status snapshot: subscribed before any call starts
        watching = asyncio.create_task(watcher.run(scores))

        async def staggered(call: Call) -> None:
            await asyncio.sleep(call.index * args.stagger_s)
            await place_call(call, target)

        await asyncio.gather(*(staggered(call) for call in calls))
        expected = {
            s for c in calls if not (c.refused or c.failed) for s in (c.customer_stream, c.agent_stream) if s
        }
        missing = await watcher.wait_ended(expected, timeout_s=30.0)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    for call in calls:
        call.alarms = sorted(watcher.alarms.get(call.customer_stream, []))
        call.agent_alarms = watcher.alarms.get(call.agent_stream or "", [])
        call.errors = watcher.errors.get(call.customer_stream, [])
        call.node = watcher.nodes.get(call.customer_stream)
        call.scores = watcher.scores.get(call.customer_stream, 0)
        if args.keep_scores:
            call.windows = sorted(watcher.windows.get(call.customer_stream, []))
        if call.customer_stream in missing:
            call.failed = "the server never ended the customer stream"
    summary = report(calls, time.monotonic() - started, watcher.max_dropped, out)
    if args.json:
        print(json.dumps(summary), file=out)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    summary = asyncio.run(simulate(argv))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
