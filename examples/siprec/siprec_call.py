"""Play a SIPREC recording client against spoofwatch: SIPp does the SIP, this script the RTP.

Start a server with the SIPREC recorder on, then send a two-party recorded call::

    spoofwatch serve --siprec-port 5060 --rtp-ports 20000-20999
    python examples/siprec/siprec_call.py --server 127.0.0.1:5060

SIPp (Debian/Ubuntu package ``sip-tester``) runs ``siprec_uac.xml``: an INVITE with a
multipart body (SDP with one ``a=sendonly`` stream per party, and RFC 7865 metadata naming
the parties), ACK, a pause as long as the audio, then BYE. Meanwhile this script reads
the two RTP ports the recorder answered from SIPp's log and sends each party's audio as
PCMU RTP, 20 ms a packet, paced in real time (``--speed`` to go faster). By default the
caller (stream ``<call-id>:+15551230001@caller.example.com``) speaks a real recording
and then an eSpeak voice, and the agent the real recording only: watch the caller's
stream raise its alarm in the dashboard (http://127.0.0.1:8765/) or on
``ws://127.0.0.1:8765/v1/scores``.

Needs spoofwatch (its G.711 encoder), ``soundfile`` and ``soxr``.
Exit status: SIPp's (0: the session was set up and torn down as the scenario expects).
Prints one JSON line: the call's RTP ports, packets sent per party, SIPp's status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray

from spoofwatch import mulaw_encode

HERE = Path(__file__).resolve().parent
AUDIO = HERE.parent / "audio"
REAL = AUDIO / "real_librispeech_1502-122615-0000.flac"
SYNTHETIC = AUDIO / "synthetic_espeak.flac"
SCENARIO = HERE / "siprec_uac.xml"
RATE = 8000
PACKET_SAMPLES = 160  # 20 ms at 8 kHz
PCMU = 0


def load_8k(paths: list[Path]) -> NDArray[np.float32]:
    """The files one after another, mono, at 8 kHz."""
    parts = []
    for path in paths:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        parts.append(soxr.resample(mono, rate, RATE) if rate != RATE else mono)
    return np.concatenate(parts).astype(np.float32)


def rtp_packets(samples: NDArray[np.float32], ssrc: int) -> list[bytes]:
    packets = []
    sequence, timestamp = secrets.randbelow(1 << 16), secrets.randbelow(1 << 32)
    for start in range(0, len(samples) - PACKET_SAMPLES + 1, PACKET_SAMPLES):
        header = struct.pack(
            ">BBHII",
            0x80,
            PCMU | (0x80 if start == 0 else 0),
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        packets.append(header + mulaw_encode(samples[start : start + PACKET_SAMPLES]).tobytes())
        sequence += 1
        timestamp += PACKET_SAMPLES
    return packets


class _Sender(asyncio.DatagramProtocol):
    pass


async def send_rtp(host: str, port: int, packets: list[bytes], speed: float) -> int:
    """Send ``packets`` to host:port, one per 20 ms / ``speed``; the number sent."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Sender, remote_addr=(host, port))
    interval = PACKET_SAMPLES / RATE / speed
    started = time.monotonic()
    try:
        for index, packet in enumerate(packets):
            transport.sendto(packet)
            delay = started + (index + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        transport.close()
    return len(packets)


async def rtp_ports_from_log(
    log: Path, sipp: asyncio.subprocess.Process, timeout_s: float
) -> tuple[int, int]:
    """The RTP-PORTS line the scenario logs when the recorder's 200 OK arrives."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists():
            match = re.search(r"RTP-PORTS (\d+) (\d+)", log.read_text(errors="replace"))
            if match:
                return int(match.group(1)), int(match.group(2))
        if sipp.returncode is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError("no 200 OK with two RTP ports from the recorder (see SIPp's output)")


async def run_call(
    server: str,
    parties: list[list[Path]],
    *,
    speed: float = 1.0,
    transport: str = "udp",
    sipp: str = "sipp",
    workdir: Path | None = None,
) -> dict[str, object]:
    """One recorded call; a summary of what was sent and SIPp's status."""
    host, _, port_text = server.rpartition(":")
    audio = [load_8k(paths) for paths in parties]
    packets = [rtp_packets(a, secrets.randbelow(1 << 32)) for a in audio]
    duration_ms = int(max(len(p) for p in packets) * 20 / speed) + 500
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        log = Path(tmp) / "sipp.log"
        process = await asyncio.create_subprocess_exec(
            sipp,
            "-sf",
            str(SCENARIO),
            "-m",
            "1",
            "-d",
            str(duration_ms),
            "-t",
            "u1" if transport == "udp" else "t1",
            "-p",
            "0",
            "-nostdin",
            "-nd",
            "-trace_logs",
            "-log_file",
            str(log),
            "-trace_err",
            "-error_file",
            str(Path(tmp) / "errors.log"),
            f"{host}:{port_text}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp,
        )
        try:
            ports = await rtp_ports_from_log(log, process, timeout_s=10.0)
            sent = await asyncio.gather(
                *(send_rtp(host, p, pk, speed) for p, pk in zip(ports, packets, strict=False))
            )
        except BaseException:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        _, err = await process.communicate()
        errors = (
            (Path(tmp) / "errors.log").read_text(errors="replace")
            if (Path(tmp) / "errors.log").exists()
            else ""
        )
    return {
        "rtp_ports": list(ports),
        "packets_sent": list(sent),
        "sipp_status": process.returncode,
        "sipp_errors": (errors or err.decode(errors="replace"))[-2000:] if process.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default="127.0.0.1:5060", help="the recorder's SIP HOST:PORT")
    parser.add_argument(
        "--caller", nargs="+", type=Path, default=[REAL, SYNTHETIC], help="the caller's audio files, in order"
    )
    parser.add_argument("--agent", nargs="+", type=Path, default=[REAL], help="the agent's audio files")
    parser.add_argument("--speed", type=float, default=1.0, help="how many times real time to send RTP")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="SIP transport")
    parser.add_argument("--sipp", default="sipp", help="the SIPp program")
    args = parser.parse_args(argv)
    if shutil.which(args.sipp) is None:
        print(f"expected SIPp at {args.sipp!r} (apt install sip-tester), found none", file=sys.stderr)
        return 2
    summary = asyncio.run(
        run_call(
            args.server, [args.caller, args.agent], speed=args.speed, transport=args.transport, sipp=args.sipp
        )
    )
    print(json.dumps(summary))
    status = summary["sipp_status"]
    return status if isinstance(status, int) else 2


if __name__ == "__main__":
    sys.exit(main())
