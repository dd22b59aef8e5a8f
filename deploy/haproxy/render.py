"""Write an HAProxy configuration that spreads spoofwatch calls over N ingest nodes.

    python deploy/haproxy/render.py --node 10.0.0.11:8765:9092 --node 10.0.0.12:8765:9092 \\
        > /etc/haproxy/haproxy.cfg

Each ``--node`` is ``HOST:WS_PORT[:AUDIOSOCKET_PORT]``. WebSocket calls (``/v1/ingest``,
``/twilio``, ``/audiohook``, ``/jambonz``) and the dashboard go through an HTTP-mode
frontend; Asterisk AudioSocket calls through a TCP-mode one. Both backends health-check
every node with ``GET /healthz`` on its WebSocket port and expect 200: a draining node
answers 503 and gets no new calls, while the calls it holds stay connected until they
end (HAProxy never cuts established sessions when a check fails). With a bearer token
on the nodes, export ``SPOOFWATCH_SERVER_TOKEN`` where HAProxy runs; the check sends it.
``haproxy.cfg`` beside this script is its output for two nodes whose addresses come
from the environment (``NODE1_HOST`` ...), as HAProxy expands ``"${VAR}"`` itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    host: str
    ws_port: str
    audiosocket_port: str | None


def parse_node(text: str) -> Node:
    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.rsplit(":", 1)
    if len(parts) == 2:
        host, ws, audiosocket = parts[0], parts[1], None
    elif len(parts) == 3:
        host, ws, audiosocket = parts
    else:
        raise argparse.ArgumentTypeError(f"expected HOST:WS_PORT[:AUDIOSOCKET_PORT], found {text!r}")
    ports = [ws] + ([audiosocket] if audiosocket is not None else [])
    if not host or not all(p.isdigit() or p.startswith("${") for p in ports):
        raise argparse.ArgumentTypeError(f"expected HOST:WS_PORT[:AUDIOSOCKET_PORT], found {text!r}")
    return Node(host, ws, audiosocket)


def render(
    nodes: Sequence[Node],
    *,
    ws_bind: str = "*:8765",
    audiosocket_bind: str | None = "*:9092",
    check_interval: str = "2s",
    fall: int = 2,
    rise: int = 2,
    stats_bind: str | None = None,
    maxconn: int = 8000,
) -> str:
    if not nodes:
        raise ValueError("expected at least one node")
    check = f"check inter {check_interval} fall {fall} rise {rise}"
    lines = [
        "# spoofwatch ingest nodes behind HAProxy (deploy/haproxy/render.py; docs/deploy.md)",
        "global",
        "    # Two sockets per call (client and node side): raise the process's open-file limit to match.",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        "    log global",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    # A call is one long-lived WebSocket or TCP connection: idle limits of a call's length.",
        "    timeout tunnel 4h",
        "    timeout client-fin 10s",
        "",
        "frontend spoofwatch_ws",
        "    mode http",
        f"    bind {ws_bind}",
        "    option http-server-close",
        "    default_backend spoofwatch_ws_nodes",
        "",
        "backend spoofwatch_ws_nodes",
        "    mode http",
        "    balance leastconn",
        "    option httpchk",
        '    http-check send meth GET uri /healthz hdr Authorization "Bearer ${SPOOFWATCH_SERVER_TOKEN}"',
        "    http-check expect status 200",
    ]
    lines += [f"    server node{i} {n.host}:{n.ws_port} {check}" for i, n in enumerate(nodes, 1)]
    with_audiosocket = [n for n in nodes if n.audiosocket_port is not None]
    if audiosocket_bind is not None and with_audiosocket:
        lines += [
            "",
            "frontend spoofwatch_audiosocket",
            "    mode tcp",
            f"    bind {audiosocket_bind}",
            "    default_backend spoofwatch_audiosocket_nodes",
            "",
            "backend spoofwatch_audiosocket_nodes",
            "    mode tcp",
            "    balance leastconn",
            "    # AudioSocket has no health request of its own: check the node's /healthz.",
            "    option httpchk",
            '    http-check send meth GET uri /healthz hdr Authorization "Bearer ${SPOOFWATCH_SERVER_TOKEN}"',
            "    http-check expect status 200",
        ]
        lines += [
            f"    server node{i} {n.host}:{n.audiosocket_port} {check} port {n.ws_port}"
            for i, n in enumerate(nodes, 1)
            if n.audiosocket_port is not None
        ]
    if stats_bind is not None:
        lines += [
            "",
            "frontend stats",
            "    mode http",
            f"    bind {stats_bind}",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 5s",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", action="append", type=parse_node, required=True, metavar="HOST:WS[:AS]")
    parser.add_argument("--bind", default="*:8765", help="WebSocket/HTTP frontend address (default *:8765)")
    parser.add_argument("--audiosocket-bind", default="*:9092", help="AudioSocket frontend (default *:9092)")
    parser.add_argument("--check-interval", default="2s", help="health check interval (default 2s)")
    parser.add_argument("--fall", type=int, default=2, help="failed checks before a node is out (default 2)")
    parser.add_argument("--rise", type=int, default=2, help="passed checks before it is back (default 2)")
    parser.add_argument("--maxconn", type=int, default=8000, help="concurrent connections (default 8000)")
    parser.add_argument("--stats-bind", help="also serve HAProxy's stats page at this address (/stats)")
    args = parser.parse_args(argv)
    sys.stdout.write(
        render(
            args.node,
            ws_bind=args.bind,
            audiosocket_bind=args.audiosocket_bind,
            check_interval=args.check_interval,
            fall=args.fall,
            rise=args.rise,
            stats_bind=args.stats_bind,
            maxconn=args.maxconn,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
