"""Shared pytest setup: make tests/ importable for the fakes module; shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import write_fake_vocoder

pytest_plugins = ["mosquitto_broker"]


@pytest.fixture
def fake_vocoder(tmp_path: Path) -> Path:
    """A program that speaks the FARGAN demo's file formats (``fakes.FAKE_VOCODER``)."""
    return write_fake_vocoder(tmp_path / "fake_fargan")


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its setting
def pytest_configure(config: pytest.Config) -> None:
    from waits import timeout_scale

    scale = timeout_scale()
    limit = getattr(config.option, "timeout", None) or config.getini("timeout")
    if scale != 1 and limit:
        config.option.timeout = float(limit) * scale


BROKER_FIXTURES = {"mosquitto", "mosquitto_factory"}
MICROPHONE_FIXTURES = {"virtual_mic"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start a broker or a virtual microphone through a fixture carry the
    ``broker`` / ``microphone`` marker (``-m "not broker"`` skips them)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if BROKER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.broker)
        if MICROPHONE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.microphone)
