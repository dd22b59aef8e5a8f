"""spoofwatch: streaming, real-time detection of synthetic speech.

The public Python API; everything else is internal and may move. Heavy parts (torch, the
detector, the server) are imported on first use, so ``import spoofwatch`` stays light::

    import spoofwatch

    detector = spoofwatch.load_detector()              # the shipped detector
    result = spoofwatch.score_file(detector, "call.wav")
    print(result.label, result.p_spoof)

    # Streaming: feed audio as it arrives, read events from the hub.
    pipeline = spoofwatch.Pipeline(detector, spoofwatch.StreamConfig(), spoofwatch.EngineConfig())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_HOME = {
    # detector and scoring
    "load_detector": "spoofwatch.model.artifact",
    "detector_dir": "spoofwatch.model.artifact",
    "Detector": "spoofwatch.model.detector",
    "WindowScorer": "spoofwatch.model.scorer",
    "score_file": "spoofwatch.train.clip_scoring",
    "score_files": "spoofwatch.train.clip_scoring",
    "score_samples": "spoofwatch.train.clip_scoring",
    "ClipScore": "spoofwatch.train.clip_scoring",
    "WindowScore": "spoofwatch.train.clip_scoring",
    # audio
    "load_audio": "spoofwatch.audio.files",
    "AudioClip": "spoofwatch.audio.files",
    "decode_pcm": "spoofwatch.audio.pcm",
    "mulaw_encode": "spoofwatch.audio.pcm",
    "mulaw_decode": "spoofwatch.audio.pcm",
    "alaw_encode": "spoofwatch.audio.pcm",
    "alaw_decode": "spoofwatch.audio.pcm",
    "resample": "spoofwatch.audio.resample",
    # streaming
    "Pipeline": "spoofwatch.stream.engine.pipeline",
    "StreamHandle": "spoofwatch.stream.engine.pipeline",
    "Subscription": "spoofwatch.stream.engine.hub",
    "StreamSession": "spoofwatch.stream.core.session",
    "serve": "spoofwatch.stream.app",
    "listen": "spoofwatch.stream.app",
    "build_tasks": "spoofwatch.stream.app",
    "run_pipeline": "spoofwatch.stream.app",
    "install_signal_handlers": "spoofwatch.stream.app",
    "remove_signal_handlers": "spoofwatch.stream.app",
    "run_file_source": "spoofwatch.stream.sources.file",
    "run_mic_source": "spoofwatch.stream.sources.mic",
    "run_listen": "spoofwatch.stream.sinks.console",
    "SpoofwatchServer": "spoofwatch.stream.net.server",
    # configuration
    "Settings": "spoofwatch.config",
    "StreamConfig": "spoofwatch.config",
    "EngineConfig": "spoofwatch.config",
    "ServerConfig": "spoofwatch.config",
    "load_settings": "spoofwatch.config",
    # events (the wire contract)
    "Event": "spoofwatch.events",
    "StreamEvent": "spoofwatch.events",
    "ScoreEvent": "spoofwatch.events",
    "AlarmEvent": "spoofwatch.events",
    "ErrorEvent": "spoofwatch.events",
    "StatusEvent": "spoofwatch.events",
    "parse_event": "spoofwatch.events",
    "to_json": "spoofwatch.events",
    # errors
    "SpoofwatchError": "spoofwatch.errors",
    "AudioError": "spoofwatch.errors",
    "ConfigError": "spoofwatch.errors",
    "ModelError": "spoofwatch.errors",
    "ProtocolError": "spoofwatch.errors",
    "LimitExceededError": "spoofwatch.errors",
    "DataError": "spoofwatch.errors",
}

__all__ = ["__version__", *_HOME]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'spoofwatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from spoofwatch.audio.files import AudioClip, load_audio
    from spoofwatch.audio.pcm import (
        alaw_decode,
        alaw_encode,
        decode_pcm,
        mulaw_decode,
        mulaw_encode,
    )
    from spoofwatch.audio.resample import resample
    from spoofwatch.config import EngineConfig, ServerConfig, Settings, StreamConfig, load_settings
    from spoofwatch.errors import (
        AudioError,
        ConfigError,
        DataError,
        LimitExceededError,
        ModelError,
        ProtocolError,
        SpoofwatchError,
    )
    from spoofwatch.events import (
        AlarmEvent,
        ErrorEvent,
        Event,
        ScoreEvent,
        StatusEvent,
        StreamEvent,
        parse_event,
        to_json,
    )
    from spoofwatch.model.artifact import detector_dir, load_detector
    from spoofwatch.model.detector import Detector
    from spoofwatch.model.scorer import WindowScorer
    from spoofwatch.stream.app import (
        build_tasks,
        install_signal_handlers,
        listen,
        remove_signal_handlers,
        run_pipeline,
        serve,
    )
    from spoofwatch.stream.core.session import StreamSession
    from spoofwatch.stream.engine.hub import Subscription
    from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle
    from spoofwatch.stream.net.server import SpoofwatchServer
    from spoofwatch.stream.sinks.console import run_listen
    from spoofwatch.stream.sources.file import run_file_source
    from spoofwatch.stream.sources.mic import run_mic_source
    from spoofwatch.train.clip_scoring import ClipScore, WindowScore, score_file, score_files, score_samples
