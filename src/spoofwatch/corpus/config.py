"""The build settings (``corpus/build.toml``): seed, clip lengths, caps, dev share, thresholds,
which speakers' splits are fixed by another corpus trained alongside, and which files that
corpus already holds."""

from __future__ import annotations

import csv
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
    # Bona fide speakers whose split another corpus fixes (speaker key, split), and groups of
    # names (whole keys or key prefixes) for one set of people (LibriTTS is cut from LibriSpeech).
    follow_splits: tuple[tuple[str, str], ...] = ()
    speaker_aliases: tuple[tuple[str, ...], ...] = ()
    # Files (SHA-1 of the original, split) the development corpus trained alongside holds.
    development_files: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        counted = ("follow_splits", "development_files")
        return ", ".join(
            f"{f.name}={len(getattr(self, f.name)) if f.name in counted else getattr(self, f.name)}"
            for f in fields(self)
        )

    def development_split(self) -> dict[str, str]:
        """SHA-1 of an original file → the development corpus's split holding it (dev where the
        table names both)."""
        split_of: dict[str, str] = {}
        for sha1, split in self.development_files:
            split_of[sha1] = "dev" if "dev" in (split, split_of.get(sha1)) else split
        return split_of


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
    splits: dict[str, Any] = {}
    development: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub not in _TABLES[key]:
                    problems.append(f"{path}: {key}.{sub}: unknown setting; expected one of {_TABLES[key]}")
                else:
                    values["near_min_s" if (key, sub) == ("near_duplicates", "min_s") else sub] = sub_value
        elif key in ("seed", "dev_share"):
            values[key] = value
        elif key == "splits" and isinstance(value, dict):
            splits.update(value)
        elif key == "development" and isinstance(value, dict):
            development.update(value)
        else:
            tables = "], [".join([*_TABLES, "splits", "development"])
            problems.append(f"{path}: {key}: unknown setting; expected seed, dev_share or [{tables}]")
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
    typed.update(_split_settings(path, splits))
    typed.update(_development_settings(path, development))
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


def _read_table(path: Path, setting: str, name: Any) -> list[dict[str, str]]:
    """The rows of the CSV beside build.toml that ``setting`` names."""
    if not isinstance(name, str):
        raise CardError(f"{path}: {setting}: expected a CSV file name, found {name!r}")
    table = path.parent / name
    try:
        with table.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise CardError(f"{path}: {setting}: expected a readable CSV, found {exc}") from exc


def _development_settings(path: Path, development: dict[str, Any]) -> dict[str, Any]:
    """``[development]``: ``files`` (a CSV of ``sha1_orig,split`` beside build.toml): the
    original files the development corpus holds, which this build leaves out."""
    unknown = sorted(set(development) - {"files"})
    if unknown:
        raise CardError(f"{path}: development.{unknown[0]}: unknown setting; expected files")
    if "files" not in development:
        return {}
    rows = _read_table(path, "development.files", development["files"])
    pairs: list[tuple[str, str]] = []
    for n, row in enumerate(rows, start=2):
        sha1, split = (row.get("sha1_orig") or "").strip().lower(), (row.get("split") or "").strip()
        if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1) or split not in ("train", "dev"):
            raise CardError(
                f"{path.parent / development['files']}:{n}: expected columns sha1_orig (40 hex digits) "
                f"and split (train or dev), found {dict(row)!r}"
            )
        pairs.append((sha1, split))
    return {"development_files": tuple(pairs)}


def _split_settings(path: Path, splits: dict[str, Any]) -> dict[str, Any]:
    """``[splits]``: ``follow`` (a CSV of ``speaker,split`` beside build.toml) and
    ``speaker_aliases`` (lists of whole speaker keys or key prefixes naming the same people)."""
    out: dict[str, Any] = {}
    unknown = sorted(set(splits) - {"follow", "speaker_aliases"})
    if unknown:
        raise CardError(f"{path}: splits.{unknown[0]}: unknown setting; expected follow or speaker_aliases")
    aliases = splits.get("speaker_aliases", [])
    if not isinstance(aliases, list) or not all(
        isinstance(g, list) and len(g) >= 2 and all(isinstance(x, str) and x for x in g) for g in aliases
    ):
        raise CardError(f"{path}: splits.speaker_aliases: expected lists of two or more keys or key prefixes")
    out["speaker_aliases"] = tuple(tuple(g) for g in aliases)
    follow = splits.get("follow")
    if follow is None:
        return out
    rows = _read_table(path, "splits.follow", follow)
    table = path.parent / follow
    pairs: list[tuple[str, str]] = []
    for n, row in enumerate(rows, start=2):
        speaker, split = (row.get("speaker") or "").strip(), (row.get("split") or "").strip()
        if not speaker or split not in ("train", "dev"):
            raise CardError(
                f"{table}:{n}: expected columns speaker and split (train or dev), found {dict(row)!r}"
            )
        pairs.append((speaker, split))
    out["follow_splits"] = tuple(pairs)
    return out
