"""Frozen configuration dataclasses and the layering: keyword arguments → TOML file →
``SPOOFWATCH_*`` environment variables → command-line flags (applied by the CLI).

Library code receives these dataclasses, never argparse namespaces.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from spoofwatch.errors import ConfigError
from spoofwatch.model.runtime_modes import BACKENDS, DEVICE_FORMS, QUANTIZATION_MODES, is_device_name

T = TypeVar("T")
ENV_PREFIX = "SPOOFWATCH_"
SCORERS: Final = ("local", "ray", "ray,local")


@dataclass(frozen=True)
class StreamConfig:
    """Per-stream behaviour: windowing, smoothing, alarm hysteresis, speech gate."""

    window_s: float = 4.0
    hop_s: float = 1.0
    min_s: float = 0.5
    smoothing: str = "mean"  # "mean" over the last smoothing_n windows, or "ema"
    smoothing_n: int = 4
    smoothing_alpha: float = 0.5
    # Alarm hysteresis on the smoothed p_spoof. None: on at the detector's threshold (the
    # policy in its model card, 0.5 for the shipped one), off at 0.7 times that.
    alarm_on: float | None = None
    alarm_off: float | None = None
    alarm_min_on_s: float = 2.0
    speech_threshold_dbfs: float = -50.0
    speech_min_fraction: float = 0.1
    # Gaps (audio that never arrived; docs/protocol.md "Gaps and pauses"). A gap up to
    # gap_tolerance_s is spliced out (the audio either side joins); a window with more than
    # that spliced out is not scored; a longer gap restarts windowing after it. 1 s by
    # measurement: as few false alarms as restarting at every gap, and spoofs with short
    # holes still caught (research/gap_false_alarms.py). Each stream's clock
    # takes at most gap_max_total_s of gaps over the whole call; beyond it gaps still
    # restart windowing but the stream's clock falls behind the call's.
    gap_tolerance_s: float = 1.0
    gap_max_total_s: float = 3600.0
    # Runs of exact digital silence (|x| <= one 16-bit step) at least this long inside
    # received audio are treated as gaps (cause "silence"). 0 = never.
    silence_gap_s: float = 0.1
    # Comfort noise (cause "comfort-noise", always spliced): runs as long of 20 ms frames
    # whose RMS is at or below quiet_level_dbfs (-120 = off) and whose spectrum is at least
    # quiet_min_flatness flat (0-1; white noise about 0.95, pink 0.6; 0 = level only). White
    # comfort noise in a call's pauses raised false alarms through G.711 (30 of 68 genuine
    # calls against 21 without it; with the rule 21 against 18, spoofs caught unchanged); a natural
    # pause's background is coloured and stays in the windows. The level alone also
    # splices natural pauses out and costs detections (docs/protocol.md "Gaps and pauses").
    quiet_level_dbfs: float = -45.0
    quiet_min_flatness: float = 0.8

    def __post_init__(self) -> None:
        for name in ("gap_tolerance_s", "gap_max_total_s", "silence_gap_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ConfigError(f"stream.{name}: expected a finite number of seconds >= 0, found {value!r}")
        level = self.quiet_level_dbfs
        if isinstance(level, bool) or not isinstance(level, int | float) or not -120.0 <= level <= -20.0:
            raise ConfigError(
                f"stream.quiet_level_dbfs: expected a level in dBFS from -120 (off) to -20, found {level!r}"
            )
        flat = self.quiet_min_flatness
        if isinstance(flat, bool) or not isinstance(flat, int | float) or not 0.0 <= flat < 1.0:
            raise ConfigError(
                "stream.quiet_min_flatness: expected a spectral flatness from 0 (off) to below 1, "
                f"found {flat!r}"
            )

    def alarm_levels(self, detector_threshold: float = 0.5) -> tuple[float, float]:
        """(on, off) thresholds on the smoothed p_spoof; unset ones follow the detector."""
        on = detector_threshold if self.alarm_on is None else self.alarm_on
        off = min(on, 0.7 * on) if self.alarm_off is None else self.alarm_off
        return on, off

    def with_alarm_levels(self, detector_threshold: float) -> StreamConfig:
        """This config with both alarm thresholds set (unset ones from the detector's)."""
        on, off = self.alarm_levels(detector_threshold)
        return dataclasses.replace(self, alarm_on=on, alarm_off=off)


@dataclass(frozen=True)
class EngineConfig:
    """The shared inference engine: batching and bounded queues."""

    max_batch: int = 16
    max_wait_ms: float = 20.0
    queue_windows: int = 512
    subscriber_queue: int = 256
    max_streams: int = 64
    num_threads: int = 0  # 0 = torch default (all cores)
    # Inference worker threads. On 2 cores, 2 workers of one torch thread each sustain about
    # 45 % more streams than 1 worker of 2 threads (docs/benchmarks.md); each stream still
    # gets its results in order. Threads per worker: see scoring_threads.
    workers: int = 2
    admission: str = "refuse"  # beyond max_streams: "refuse" new calls, or "queue" them
    queue_timeout_s: float = 4.0  # longest a queued call waits before it is refused
    # Seconds of audio one stream may carry (4 h); beyond it the stream ends with a
    # ``limit_exceeded`` error event and later audio is dropped. 0 = no limit.
    max_stream_s: float = 4 * 3600.0
    # Fastest a stream may deliver audio, as a multiple of real time, after a burst of
    # max_speed_burst_s seconds of audio; beyond it the stream ends with limit_exceeded.
    # One client replaying a file at 100x would otherwise crowd every other stream out of
    # the shared window queue. 0 = no limit. Both limits spare local mic and file sources.
    max_speed: float = 8.0
    max_speed_burst_s: float = 60.0
    # How the encoder runs, when not as the detector card says (""): quantization
    # none | int8 | int8-all, backend torch | onnxruntime. A head is calibrated for the
    # quantisation and backend it was fitted with (docs/benchmarks.md). Plain strings, not
    # optional ones: the config loader reads "none" as unset for optional fields.
    quantization: str = ""
    backend: str = ""
    # Where the local encoder runs: "" or cpu, cuda, cuda:N, auto (a GPU if torch sees one).
    # On a GPU, int8 layers run as their float32 emulation; see spoofwatch.model.device.
    device: str = ""
    # Seconds between handing the C heap's free pages back to the OS (glibc malloc_trim,
    # about 30 ms): without it resident memory keeps the high-water mark of the largest
    # batches ever scored. 0 = never. See spoofwatch.stream.engine.heap.
    heap_trim_interval_s: float = 60.0
    # Who scores the windows: "local" (this process), "ray" (the inference pool, see
    # docs/pool.md) or "ray,local" (the pool, and this process while the pool is
    # unreachable). ray_address: the Ray cluster ("" = auto: the one this machine joined);
    # ray_timeout_s: longest wait for one batch before it is retried once.
    scorer: str = "local"
    ray_address: str = ""
    ray_timeout_s: float = 5.0
    # Batches one node keeps in flight to the pool (its batcher's threads, each waiting on
    # one call): about two per replica serving the node, so that a replica has the next
    # batch queued while it scores one (docs/benchmarks.md: with 2 on a 2-replica pool the
    # replicas idled through each round trip). While the pool is unreachable, at most
    # ``workers`` of them score locally at once.
    ray_inflight: int = 8
    # Drift alarms (spoofwatch.ops.drift): Jensen-Shannon divergence (bits) of the last
    # drift_window_s seconds of window scores, levels and speech shares from the detector
    # card's reference; a drift event beyond drift_threshold once drift_min_windows windows
    # were seen (0 = off). drift_spoof_share: share of synthetic calls the reference mixes in.
    # drift_reference: a JSON file holding a reference made from this node's own genuine
    # calls with its detector (scripts/drift_reference.py --out), used instead of the card's:
    # genuine sources differ from the card's mix by as much as a codec moves one source
    # (docs/protocol.md, drift alarms), so a node is best compared with its own normal.
    drift_window_s: float = 900.0
    drift_threshold: float = 0.1
    drift_min_windows: int = 300
    drift_spoof_share: float = 0.0
    drift_reference: str = ""

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ConfigError(f"engine.scorer: expected one of {SCORERS}, found {self.scorer!r}")
        if not (math.isfinite(self.ray_timeout_s) and self.ray_timeout_s > 0):
            raise ConfigError(f"engine.ray_timeout_s: expected seconds > 0, found {self.ray_timeout_s!r}")
        if not 1 <= self.ray_inflight <= 256:
            raise ConfigError(
                "engine.ray_inflight: expected 1..256 batches in flight to the pool, "
                f"found {self.ray_inflight!r}"
            )
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"engine.workers: expected 1..64 inference workers, found {self.workers!r}")
        choices = {"quantization": QUANTIZATION_MODES, "backend": BACKENDS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value and value not in allowed:
                raise ConfigError(
                    f"engine.{name}: expected one of {allowed} (or unset: the card's), found {value!r}"
                )
        if self.device and not is_device_name(self.device):
            raise ConfigError(
                f"engine.device: expected {DEVICE_FORMS} (or unset: cpu), found {self.device!r}"
            )
        if not (0.0 <= self.drift_threshold <= 1.0 and 0.0 <= self.drift_spoof_share <= 1.0):
            raise ConfigError(
                "engine.drift_threshold and engine.drift_spoof_share: expected numbers in [0, 1], found "
                f"{self.drift_threshold!r} and {self.drift_spoof_share!r}"
            )
        if not (math.isfinite(self.drift_window_s) and self.drift_window_s > 0) or self.drift_min_windows < 1:
            raise ConfigError(
                "engine.drift_window_s and engine.drift_min_windows: expected seconds > 0 and at least "
                f"1 window, found {self.drift_window_s!r} and {self.drift_min_windows!r}"
            )
        for name in ("max_stream_s", "max_speed", "max_speed_burst_s", "heap_trim_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"engine.{name}: expected a finite number >= 0 (0 = no limit), found {value!r}"
                )


def scoring_threads(engine: EngineConfig) -> int | None:
    """Torch threads per inference worker: ``engine.num_threads`` if set; with several
    workers, the cores shared out between them (so they do not oversubscribe); otherwise
    None (the detector card's setting, else torch's default)."""
    if engine.num_threads:
        return engine.num_threads
    if engine.workers > 1:
        return max(1, (os.cpu_count() or 1) // engine.workers)
    return None


def detector_options(
    engine: EngineConfig, *, quantization: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """``load_detector`` keyword arguments for how the engine runs the detector: threads per
    worker, batch size, and quantization / backend (the arguments, else the engine's, else
    None: the card's), and the engine's device (unset: the CPU)."""
    return {
        "num_threads": scoring_threads(engine),
        "max_batch": engine.max_batch,
        "quantization": quantization or engine.quantization or None,
        "backend": backend or engine.backend or None,
        "device": engine.device or None,
    }


@dataclass(frozen=True)
class ServerConfig:
    """The network front end. Secrets (``token``, ``mqtt_password``, a password inside
    ``mqtt``, ``audiohook_clients``, ``siprec_users``) never appear in ``repr``; pass them as
    ``SPOOFWATCH_SERVER_TOKEN``, ``SPOOFWATCH_SERVER_MQTT_PASSWORD``,
    ``SPOOFWATCH_SERVER_AUDIOHOOK_CLIENTS`` and ``SPOOFWATCH_SERVER_SIPREC_USERS`` rather
    than on the command line."""

    host: str = "127.0.0.1"  # loopback only; bind 0.0.0.0 deliberately, with a token and TLS
    port: int = 8765
    token: str | None = None  # bearer token required on every path when set
    mqtt: str | None = None  # mqtt://[user[:password]@]host[:port] or mqtts://... (TLS)
    mqtt_prefix: str = "spoofwatch"
    node: str = "node"
    sources: tuple[str, ...] = ()
    jsonl: str | None = None
    detector: str | None = None
    audiosocket_port: int | None = None  # Asterisk AudioSocket (TCP) listens here when set
    # TLS for the WebSocket/HTTP port (wss://, https://): PEM certificate chain and key.
    tls_cert: str | None = None
    tls_key: str | None = None  # may be omitted when tls_cert holds the key too
    # MQTT credentials (override the URL's) and the CA bundle that signs an mqtts:// broker
    # (default: the system's trusted CAs).
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca_file: str | None = None
    # Per-connection limits on untrusted clients.
    max_message_bytes: int = 1 << 20  # largest audio frame; up to twice this gets an error
    # event and is dropped, larger ones end the connection (1009)
    max_messages_per_s: float = 500.0  # sustained message rate (token bucket); Twilio with
    # both tracks sends 100/s, 10 ms ingest frames are 100/s. Beyond it the connection's
    # streams end (limit_exceeded) and the connection is closed with 1008
    max_message_burst: int = 1000  # messages a client may send at once above that rate
    max_streams_per_connection: int = 1000  # streams one connection may open over its life
    # (/v1/ingest runs them one after another); 0 = no limit
    # Genesys AudioHook clients (docs/security.md, "AudioHook authentication"): entries
    # "API_KEY:BASE64_CLIENT_SECRET"; when any is set, /audiohook requires a valid HTTP
    # message signature (an empty secret lets that key connect unsigned). Pass them as
    # SPOOFWATCH_SERVER_AUDIOHOOK_CLIENTS (comma-separated) or in a secrets file.
    audiohook_clients: tuple[str, ...] = ()
    audiohook_clients_file: str | None = None  # one "API_KEY:BASE64_SECRET" per line
    # POST /v1/score: the largest request body and the longest audio it may hold.
    score_max_bytes: int = 64 << 20
    score_max_duration_s: float = 300.0
    # Hot reload (docs/learning.md): reload the card when its directory's files change.
    watch_detector: bool = False
    watch_detector_interval_s: float = 2.0
    # Analyst feedback (docs/learning.md): where marked windows' features are stored
    # (SQLite; None = feedback is refused), and the bounds on the features kept per node.
    feedback_dir: str | None = None
    feedback_windows: int = 120  # recent windows kept per stream
    feedback_max_mb: float = 64.0  # all streams' kept features together
    feedback_keep_s: float = 900.0  # how long an ended stream's windows stay for late feedback
    # SIGTERM drains (docs/deploy.md): new calls are refused, live calls get this long to end.
    drain_timeout_s: float = 30.0
    # Relay every node's events from the shared MQTT broker to this node's dashboard.
    cluster_view: bool = False
    # SIPREC recording server (docs/telephony.md, "SIPREC"): SIP on UDP and TCP at
    # siprec_port, SIP over TLS (tls_cert/tls_key) at siprec_tls_port, RTP on even ports
    # of rtp_ports. siprec_allow: the addresses/networks a recording client may come from
    # (empty: any); siprec_users: "USER:PASSWORD" entries that turn on digest authentication.
    siprec_port: int | None = None
    siprec_tls_port: int | None = None
    rtp_ports: str = "20000-20999"
    siprec_allow: tuple[str, ...] = ()
    siprec_users: tuple[str, ...] = ()
    siprec_realm: str = "spoofwatch"
    siprec_max_sessions: int = 32
    siprec_rtp_timeout_s: float = 20.0  # a session whose RTP stops this long is ended
    siprec_max_packets_per_s: float = 200.0  # per RTP stream; faster packets are dropped
    # Webhooks (docs/protocol.md "Webhooks"): POST these event types to each URL, signed
    # with webhook_secret (pass it as SPOOFWATCH_SERVER_WEBHOOK_SECRET).
    webhooks: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_events: tuple[str, ...] = ("alarm",)  # or "all", or some of alarm,evidence,stream,...
    webhook_queue: int = 1000  # events waiting per endpoint; beyond it the oldest is dropped
    webhook_timeout_s: float = 5.0  # one attempt; then it is retried with backoff
    # Alarm evidence (docs/protocol.md "Alarm evidence"): recorded audio around each alarm.
    evidence_dir: str | None = None  # off unless set
    evidence_days: float = 30.0  # files older than this are deleted
    evidence_seconds: float = 20.0  # audio kept per stream, and so the length of a clip

    def __post_init__(self) -> None:
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("server.tls_key: expected server.tls_cert as well, found only the key")
        checks = [
            ("max_message_bytes", self.max_message_bytes >= 1024, "an integer >= 1024"),
            (
                "max_messages_per_s",
                math.isfinite(self.max_messages_per_s) and self.max_messages_per_s > 0,
                "a finite number > 0",
            ),
            ("max_message_burst", self.max_message_burst >= 1, "an integer >= 1"),
            ("max_streams_per_connection", self.max_streams_per_connection >= 0, "an integer >= 0"),
            ("score_max_bytes", self.score_max_bytes >= 1024, "an integer >= 1024"),
            (
                "score_max_duration_s",
                math.isfinite(self.score_max_duration_s) and self.score_max_duration_s > 0,
                "a finite number of seconds > 0",
            ),
            (
                "watch_detector_interval_s",
                math.isfinite(self.watch_detector_interval_s) and self.watch_detector_interval_s > 0,
                "a finite number of seconds > 0",
            ),
            ("feedback_windows", self.feedback_windows >= 1, "an integer >= 1"),
            (
                "feedback_max_mb",
                math.isfinite(self.feedback_max_mb) and self.feedback_max_mb > 0,
                "a finite number of MB > 0",
            ),
            (
                "feedback_keep_s",
                math.isfinite(self.feedback_keep_s) and self.feedback_keep_s >= 0,
                "a finite number of seconds >= 0",
            ),
            (
                "drain_timeout_s",
                math.isfinite(self.drain_timeout_s) and self.drain_timeout_s >= 0,
                "a non-negative number of seconds",
            ),
            ("siprec_max_sessions", self.siprec_max_sessions >= 1, "an integer >= 1"),
            (
                "siprec_rtp_timeout_s",
                math.isfinite(self.siprec_rtp_timeout_s) and self.siprec_rtp_timeout_s > 0,
                "a finite number of seconds > 0",
            ),
            (
                "siprec_max_packets_per_s",
                math.isfinite(self.siprec_max_packets_per_s) and self.siprec_max_packets_per_s > 0,
                "a finite number > 0",
            ),
            ("webhook_queue", self.webhook_queue >= 1, "an integer >= 1"),
            (
                "webhook_timeout_s",
                math.isfinite(self.webhook_timeout_s) and self.webhook_timeout_s > 0,
                "a finite number of seconds > 0",
            ),
            ("evidence_days", math.isfinite(self.evidence_days) and self.evidence_days > 0, "days > 0"),
            (
                "evidence_seconds",
                math.isfinite(self.evidence_seconds) and 5.0 <= self.evidence_seconds <= 300.0,
                "seconds in [5, 300]",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"server.{name}: expected {expected}, found {getattr(self, name)!r}")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value not in (None, ()):
                value = REDACTED
            elif f.name == "mqtt" and isinstance(value, str):
                value = redact_url(value)
            elif f.name == "webhooks":  # a webhook URL's path or query often holds a token
                value = tuple(redact_webhook_url(u) for u in value)
            shown.append(f"{f.name}={value!r}")
        return f"ServerConfig({', '.join(shown)})"


REDACTED: Final = "<redacted>"
_SECRET_FIELDS: Final = ("token", "mqtt_password", "audiohook_clients", "siprec_users", "webhook_secret")


def redact_webhook_url(url: str) -> str:
    """``url`` without its password, path and query (webhook URLs often carry a token there)."""
    try:
        parts = urlsplit(redact_url(url))
    except ValueError:
        return f"{url.partition(':')[0]}:{REDACTED}"
    hidden = "/" + REDACTED if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{hidden}"


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:  # unparseable: show none of it past the scheme
        return f"{url.partition(':')[0]}:{REDACTED}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))


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
        rest = key[len(ENV_PREFIX) :].lower()
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
