"""SIPREC settings: CLI flags, TOML keys and environment variables reach the server;
bad values are refused at start-up; stream start events carry the party's metadata."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fakes import FakeScorer
from spoofwatch.cli import _server_settings, build_parser
from spoofwatch.config import ServerConfig, load_settings
from spoofwatch.errors import ConfigError
from spoofwatch.events import StreamEvent, parse_event, to_json
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.net.siprec_server import server_from_config


def test_flags_toml_and_environment_set_the_siprec_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--siprec-port=5070",
            "--siprec-tls-port=5071",
            "--rtp-ports=30000-30100",
            "--siprec-allow=10.0.0.0/8",
            "--siprec-allow=127.0.0.1",
            "--siprec-max-sessions=4",
        ]
    )
    server = _server_settings(args).server
    assert (server.siprec_port, server.siprec_tls_port, server.rtp_ports) == (5070, 5071, "30000-30100")
    assert server.siprec_allow == ("10.0.0.0/8", "127.0.0.1") and server.siprec_max_sessions == 4
    toml = tmp_path / "spoofwatch.toml"
    toml.write_text(
        '[server]\nsiprec_port = 5060\nsiprec_allow = ["192.0.2.0/24"]\nsiprec_rtp_timeout_s = 5.0\n'
    )
    env = {
        "SPOOFWATCH_SERVER_SIPREC_USERS": "sbc:pa55,backup:w0rd",
        "SPOOFWATCH_SERVER_RTP_PORTS": "40000-40010",
    }
    server = load_settings(toml, env=env).server
    assert server.siprec_port == 5060 and server.siprec_allow == ("192.0.2.0/24",)
    assert server.siprec_users == ("sbc:pa55", "backup:w0rd") and server.rtp_ports == "40000-40010"
    assert "pa55" not in repr(server) and server.siprec_rtp_timeout_s == 5.0


def test_the_server_is_built_as_configured_and_bad_values_are_refused() -> None:
    pipeline = Pipeline(FakeScorer(16000, 1.0))
    config = ServerConfig(
        siprec_port=0, siprec_allow=("10.0.0.0/8",), siprec_users=("sbc:pa55",), rtp_ports="30000-30100"
    )
    server = server_from_config(pipeline, config)
    assert server.allow == [ipaddress.ip_network("10.0.0.0/8")] and (server.rtp_low, server.rtp_high) == (
        30000,
        30100,
    )
    assert server.authenticator is not None and server.authenticator.users == {"sbc": "pa55"}
    bad = [
        ({"rtp_ports": "30000"}, "LOW-HIGH"),
        ({"rtp_ports": "300-200"}, "LOW-HIGH"),
        ({"siprec_allow": ("not-an-ip",)}, "networks"),
        ({"siprec_users": ("nopassword",)}, "USER:PASSWORD"),
        ({"siprec_tls_port": 5061}, "tls_cert"),
    ]
    for changes, says in bad:
        with pytest.raises(ConfigError, match=says):
            server_from_config(pipeline, ServerConfig(siprec_port=0, **changes))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="siprec_max_sessions"):
        ServerConfig(siprec_max_sessions=0)


def test_start_events_carry_metadata_only_when_there_is_some() -> None:
    plain = StreamEvent("s", "start", 8000, "ws_ingest")
    assert "metadata" not in to_json(plain) and parse_event(to_json(plain)) == plain
    rich = StreamEvent("c:alice", "start", 8000, "siprec", metadata={"name": "Alice", "aor": "sip:alice@x"})
    assert '"metadata":{"name":"Alice","aor":"sip:alice@x"}' in to_json(rich)
    assert parse_event(to_json(rich)) == rich


def test_serve_runs_the_siprec_server_beside_the_websocket_one() -> None:
    from spoofwatch.config import Settings
    from spoofwatch.stream.app import build_tasks

    pipeline = Pipeline(FakeScorer(16000, 1.0))
    settings = Settings(server=ServerConfig(port=0, siprec_port=0))
    assert {"websocket", "siprec"} <= set(build_tasks(pipeline, settings))
    bad = Settings(server=ServerConfig(port=0, siprec_port=0, rtp_ports="1-2"))
    with pytest.raises(ConfigError, match="rtp_ports"):
        build_tasks(pipeline, bad)
