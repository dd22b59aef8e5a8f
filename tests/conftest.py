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
