"""Receive spoofwatch webhooks and verify their signatures (standard library only).

Run the receiver with the shared secret, then point a server at it::

    export SPOOFWATCH_WEBHOOK_SECRET=...   # the same value as the server's webhook secret
    python examples/webhook_receiver.py --port 9000
    SPOOFWATCH_SERVER_WEBHOOK_SECRET=$SPOOFWATCH_WEBHOOK_SECRET \\
        spoofwatch serve --webhook http://127.0.0.1:9000/spoofwatch

Each request is checked as docs/protocol.md ("Webhooks") describes: the
``X-Spoofwatch-Signature`` header must be ``sha256=`` + the hex HMAC-SHA256, keyed with
the secret, of ``<X-Spoofwatch-Timestamp> + "." + <body>``; the timestamp must be within
``--tolerance-s`` of this machine's clock; a delivery id seen before is acknowledged but not
printed again (a retry whose answer was lost). A verified event is printed as one JSON line
on stdout and answered 204; a bad signature or timestamp gets 401, a body that is not a JSON
object 400. ``--port 0`` picks a free port; the address is printed on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
SEEN_IDS = 10_000


def expected_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def check(
    secret: bytes, timestamp: str | None, signature: str | None, body: bytes, tolerance_s: float
) -> str | None:
    """None when the request is genuine and fresh; otherwise why not."""
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return "missing or malformed X-Spoofwatch-Timestamp"
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return "timestamp too old or in the future (replay?)"
    if not signature or not hmac.compare_digest(expected_signature(secret, timestamp, body), signature):
        return "signature does not match"
    return None


def make_handler(secret: bytes, tolerance_s: float) -> type[BaseHTTPRequestHandler]:
    seen: OrderedDict[str, None] = OrderedDict()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413, "body too large")
                return
            body = self.rfile.read(length)
            problem = check(
                secret,
                self.headers.get("X-Spoofwatch-Timestamp"),
                self.headers.get("X-Spoofwatch-Signature"),
                body,
                tolerance_s,
            )
            if problem:
                print(f"refused: {problem}", file=sys.stderr, flush=True)
                self.send_error(401, problem)
                return
            try:
                event = json.loads(body)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                self.send_error(400, "expected a JSON object")
                return
            delivery = self.headers.get("X-Spoofwatch-Delivery") or ""
            if delivery not in seen:
                seen[delivery] = None
                if len(seen) > SEEN_IDS:
                    seen.popitem(last=False)
                print(json.dumps(event, separators=(",", ":")), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per event on stdout is the output; refusals go to stderr

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify and print spoofwatch webhooks.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port (default 9000; 0 = any free port)")
    parser.add_argument(
        "--secret", help="the webhook secret (default: $SPOOFWATCH_WEBHOOK_SECRET; argv is visible to others)"
    )
    parser.add_argument(
        "--tolerance-s", type=float, default=300.0, help="oldest timestamp accepted (seconds)"
    )
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get("SPOOFWATCH_WEBHOOK_SECRET")
    if not secret:
        parser.error("expected a secret: --secret or $SPOOFWATCH_WEBHOOK_SECRET")
    server = ThreadingHTTPServer(
        (args.host, args.port), make_handler(secret.encode("utf-8"), args.tolerance_s)
    )
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
