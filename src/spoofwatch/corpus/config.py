"""The build settings (``corpus/build.toml``): seed, clip lengths, caps, dev share, thresholds."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from spoofwatch.corpus.cards import CardError

_TABLES = {
    "clips": ("max_s", "min_s", "min_last_s", "max_pieces"),
    "caps": ("generator_minutes", "speaker_minutes"),
    "silence": ("peak_dbfs", "rms_dbfs"),
    "near_duplicates": ("threshold", "min_s"),
}


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 20261206
    dev_share: float = 0.1
    max_s: float = 10.0
    min_s: float = 1.0
    min_last_s: float = 2.0
    max_pieces: int = 30
    generator_minutes: float = 15.0
    speaker_minutes: float = 3.0
    peak_dbfs: float = -50.0
    rms_dbfs: float = -60.0
    threshold: float = 0.85
    near_min_s: float = 2.0

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def load_config(path: Path | None) -> BuildConfig:
    """Read ``path`` (None: the defaults above); unknown or mistyped keys are errors."""
    if path is None:
        return BuildConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CardError(f"{path}: expected a readable build.toml, found {exc}") from exc
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub not in _TABLES[key]:
                    problems.append(f"{path}: {key}.{sub}: unknown setting; expected one of {_TABLES[key]}")
                else:
                    values["near_min_s" if (key, sub) == ("near_duplicates", "min_s") else sub] = sub_value
        elif key in ("seed", "dev_share"):
            values[key] = value
        else:
            problems.append(
                f"{path}: {key}: unknown setting; expected seed, dev_share or [{'], ['.join(_TABLES)}]"
            )
    defaults = BuildConfig()
    for name, value in values.items():
        want = type(getattr(defaults, name))
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if want is int and not isinstance(value, int):
            ok = False
        if not ok:
            problems.append(f"{path}: {name}: expected a {want.__name__}, found {value!r}")
    if problems:
        raise CardError("\n".join(problems))
    typed: dict[str, Any] = {
        k: (float(v) if isinstance(getattr(defaults, k), float) else v) for k, v in values.items()
    }
    config = BuildConfig(**typed)
    if not problems:
        if not 0.0 <= config.dev_share < 1.0:
            problems.append(f"{path}: dev_share: expected a share in [0, 1), found {config.dev_share}")
        if not 0 < config.min_s <= config.min_last_s <= config.max_s:
            problems.append(
                f"{path}: clips: expected 0 < min_s <= min_last_s <= max_s, found {config.describe()}"
            )
        if config.max_pieces < 1 or config.generator_minutes <= 0 or config.speaker_minutes <= 0:
            problems.append(f"{path}: expected positive max_pieces and caps, found {config.describe()}")
    if problems:
        raise CardError("\n".join(problems))
    return config
