"""Frozen configuration dataclasses and the layering: keyword arguments → TOML file →
``SPOOFWATCH_*`` environment variables → command-line flags (applied by the CLI).

Library code receives these dataclasses, never argparse namespaces.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from spoofwatch.errors import ConfigError

T = TypeVar("T")
ENV_PREFIX = "SPOOFWATCH_"


@dataclass(frozen=True)
class StreamConfig:
    """Per-stream behaviour: windowing, smoothing, alarm hysteresis, speech gate."""

    window_s: float = 4.0
    hop_s: float = 1.0
    min_s: float = 0.5
    smoothing: str = "mean"  # "mean" over the last smoothing_n windows, or "ema"
    smoothing_n: int = 4
    smoothing_alpha: float = 0.5
    alarm_on: float = 0.5
    alarm_off: float = 0.35
    alarm_min_on_s: float = 2.0
    speech_threshold_dbfs: float = -50.0
    speech_min_fraction: float = 0.1


@dataclass(frozen=True)
class EngineConfig:
    """The shared inference engine: batching and bounded queues."""

    max_batch: int = 16
    max_wait_ms: float = 20.0
    queue_windows: int = 512
    subscriber_queue: int = 256
    max_streams: int = 64
    num_threads: int = 0  # 0 = torch default (all cores)
    admission: str = "refuse"  # beyond max_streams: "refuse" new calls, or "queue" them
    queue_timeout_s: float = 4.0  # longest a queued call waits before it is refused


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    mqtt: str | None = None
    mqtt_prefix: str = "spoofwatch"
    node: str = "node"
    sources: tuple[str, ...] = ()
    jsonl: str | None = None
    detector: str | None = None
    audiosocket_port: int | None = None  # Asterisk AudioSocket (TCP) listens here when set


@dataclass(frozen=True)
class Settings:
    stream: StreamConfig = field(default_factory=StreamConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("", "none"))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if annotation is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except ValueError:
        raise ConfigError(f"{where}: expected {annotation.__name__}, found {value!r}") from None
    return value


def _apply(obj: T, updates: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}  # type: ignore[arg-type]
    unknown = sorted(set(updates) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(known)}")
    coerced = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in updates.items()}
    return dataclasses.replace(obj, **coerced)  # type: ignore[type-var]


def load_settings(
    toml_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Defaults, then the TOML file's ``[stream]``, ``[engine]``, ``[server]`` tables, then
    ``SPOOFWATCH_<SECTION>_<OPTION>`` environment variables, then ``overrides``."""
    settings = Settings()
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        layers.append((str(path), data))
    env_map: dict[str, dict[str, Any]] = {}
    sections = {f.name for f in fields(Settings)}
    for key, value in (os.environ if env is None else env).items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):].lower()
        section, _, option = rest.partition("_")
        if section in sections and option:
            env_map.setdefault(section, {})[option] = value
    layers.append(("environment", env_map))
    if overrides:
        layers.append(("command line", overrides))
    for where, layer in layers:
        unknown = sorted(set(layer) - sections)
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {unknown}; expected {sorted(sections)}")
        for section, values in layer.items():
            if not isinstance(values, Mapping):
                raise ConfigError(f"{where}: [{section}] must be a table, found {values!r}")
            current = getattr(settings, section)
            updated = _apply(current, values, f"{where}: {section}")
            settings = dataclasses.replace(settings, **{section: updated})
    return settings
