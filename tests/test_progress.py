"""Progress: a bar on a terminal, plain periodic lines in logs; the server logs at INFO."""

from __future__ import annotations

import io
import itertools
import logging

import pytest

from spoofwatch import cli
from spoofwatch.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_plain_lines_at_the_period_and_at_the_end() -> None:
    out = io.StringIO()
    ticks = itertools.count(step=10.0)  # each item takes 10 s
    items = list(
        progress(range(7), desc="embed clean", unit="clip", out=out, every_s=25.0, clock=lambda: next(ticks))
    )
    assert items == list(range(7))
    lines = out.getvalue().splitlines()
    assert lines == [
        "embed clean: 3/7 clip (43 %), 30 s",
        "embed clean: 6/7 clip (86 %), 60 s",
        "embed clean: 7/7 clip done in 80 s",
    ]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_bar() -> None:
    out = Terminal()
    assert list(progress(range(3), desc="loso", out=out)) == [0, 1, 2]
    assert "\r" in out.getvalue() and "loso" in out.getvalue()


def test_disabled_progress_says_nothing() -> None:
    out = io.StringIO()
    assert list(progress(iter(range(3)), desc="x", enabled=False, out=out)) == [0, 1, 2]
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("command", "verbose", "level"),
    [
        ("serve", 0, logging.INFO),
        ("serve", 1, logging.DEBUG),
        ("score", 0, logging.WARNING),
        ("score", 1, logging.INFO),
    ],
)
def test_serve_logs_at_info_and_the_others_at_warning(
    monkeypatch: pytest.MonkeyPatch, command: str, verbose: int, level: int
) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    cli._configure(cli.argparse.Namespace(command=command, verbose=verbose, threads=0))
    assert seen["level"] == level
