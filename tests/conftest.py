"""Shared pytest setup: make tests/ importable for the fakes module."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["mosquitto_broker"]
