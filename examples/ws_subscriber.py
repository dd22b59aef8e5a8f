"""Print live spoofwatch events from the ``/v1/scores`` WebSocket.

Start a server, then subscribe (every stream, or one with ``--stream``)::

    spoofwatch serve --port 8765 [--token TOKEN]
    python examples/ws_subscriber.py --url ws://127.0.0.1:8765 [--token TOKEN] [--stream ID]

One line per event; ``--json`` prints the raw JSON events instead (one per line, ready
for ``jq``). When the connection drops the subscriber reconnects with backoff.
``--until-alarm`` exits with status 0 at the first alarm, so a shell script can wait for
one; a refused token exits with status 2.

Needs only the ``websockets`` package (``pip install websockets``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

POLICY_VIOLATION = 1008  # the server's answer to a missing or wrong token


class Refused(Exception):
    """The server refused us (bad token); retrying would not help."""


def scores_url(base: str, stream: str | None = None) -> str:
    """``ws://host:port`` (or http://) → ``ws://host:port/v1/scores[?stream=ID]``."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"--url: expected ws://, wss://, http:// or https://, found {base!r}")
    query = urlencode({"stream": stream}) if stream else ""
    return urlunsplit((scheme, parts.netloc, "/v1/scores", query, ""))


def describe(event: dict[str, Any]) -> str:
    """A one-line human summary of an event."""
    kind = event.get("type")
    sid = event.get("stream")
    if kind == "score":
        bar = "#" * round(20 * float(event["smoothed"]))
        return f"{sid} {event['t_end']:7.1f} s  p_spoof {event['smoothed']:.2f} |{bar:<20}|"
    if kind == "alarm":
        state = "ALARM ON " if event["state"] == "on" else "alarm off"
        return f"{sid} {state} at {event['t']:.1f} s (p_spoof {event['p_spoof']:.2f})"
    if kind == "stream":
        return f"{sid} stream {event['state']} ({event['source']}, {event['sample_rate']} Hz)"
    if kind == "status":
        return (
            f"server {event['node']}: {event['streams']}/{event['max_streams']} streams, "
            f"{event['queued_windows']} windows queued, {event['dropped_windows']} dropped"
        )
    if kind == "error":
        return f"{sid or '-'} error {event['code']}: {event['message']}"
    return json.dumps(event)


async def subscribe(
    url: str,
    token: str | None,
    *,
    stream: str | None = None,
    as_json: bool = False,
    until_alarm: bool = False,
) -> int:
    """Print events until interrupted (or the first alarm); reconnect when dropped."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # ``async for`` over ``connect`` reconnects with exponential backoff on network errors.
    async for ws in connect(scores_url(url, stream), additional_headers=headers, open_timeout=10):
        try:
            async for message in ws:
                event = json.loads(message)
                print(message if as_json else describe(event), flush=True)
                if until_alarm and event.get("type") == "alarm" and event.get("state") == "on":
                    return 0
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == POLICY_VIOLATION:
                raise Refused(exc.rcvd.reason) from None
        print("connection closed; reconnecting", file=sys.stderr, flush=True)
    return 1  # unreachable: connect() iterates forever


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server base URL (default %(default)s)")
    parser.add_argument("--token", help="bearer token, if the server was started with --token")
    parser.add_argument("--stream", help="only this stream's events")
    parser.add_argument("--json", action="store_true", help="print raw JSON events, one per line")
    parser.add_argument("--until-alarm", action="store_true", help="exit 0 at the first alarm")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(
            subscribe(
                args.url, args.token, stream=args.stream, as_json=args.json, until_alarm=args.until_alarm
            )
        )
    except Refused as exc:
        print(f"refused by the server: {exc}", file=sys.stderr)
        return 2
    except InvalidStatus as exc:
        print(f"not a spoofwatch server at {args.url}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
