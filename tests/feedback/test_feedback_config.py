"""The feedback and hot-reload options: flag, TOML key and environment variable; bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from spoofwatch.cli import _server_settings, build_parser
from spoofwatch.config import load_settings
from spoofwatch.errors import ConfigError


def test_flags_toml_and_environment_set_the_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--feedback-dir", str(tmp_path), "--watch-detector", "--feedback-windows", "30"]
    )
    server = _server_settings(args).server
    assert (server.feedback_dir, server.watch_detector, server.feedback_windows) == (str(tmp_path), True, 30)
    assert _server_settings(build_parser().parse_args(["serve"])).server.watch_detector is False
    toml = tmp_path / "spoofwatch.toml"
    toml.write_text("[server]\nfeedback_max_mb = 8\nfeedback_keep_s = 60\nwatch_detector_interval_s = 0.5\n")
    server = load_settings(toml, env={"SPOOFWATCH_SERVER_WATCH_DETECTOR": "yes"}).server
    assert (server.feedback_max_mb, server.feedback_keep_s, server.watch_detector_interval_s) == (
        8.0,
        60.0,
        0.5,
    )
    assert server.watch_detector is True


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("FEEDBACK_WINDOWS", "0", "feedback_windows: expected an integer >= 1"),
        ("FEEDBACK_MAX_MB", "-1", "feedback_max_mb: expected a finite number of MB > 0"),
        ("FEEDBACK_KEEP_S", "inf", "feedback_keep_s: expected a finite number of seconds >= 0"),
        ("WATCH_DETECTOR_INTERVAL_S", "0", "watch_detector_interval_s: expected a finite number"),
    ],
)
def test_bad_values_are_refused_naming_the_option(key: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(env={f"SPOOFWATCH_SERVER_{key}": value})
