"""The public Python API: the names ``spoofwatch`` promises, loaded lazily, and the
examples written against them alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import spoofwatch

REPO = Path(__file__).resolve().parents[1]
PUBLIC = [
    "AlarmEvent",
    "AudioClip",
    "AudioError",
    "ClipScore",
    "ConfigError",
    "DataError",
    "Detector",
    "EngineConfig",
    "ErrorEvent",
    "Event",
    "LimitExceededError",
    "ModelError",
    "Pipeline",
    "ProtocolError",
    "ScoreEvent",
    "ServerConfig",
    "Settings",
    "SpoofwatchError",
    "SpoofwatchServer",
    "StatusEvent",
    "StreamConfig",
    "StreamEvent",
    "StreamHandle",
    "StreamSession",
    "Subscription",
    "WindowScore",
    "WindowScorer",
    "__version__",
    "alaw_decode",
    "alaw_encode",
    "build_tasks",
    "decode_pcm",
    "detector_dir",
    "install_signal_handlers",
    "listen",
    "load_audio",
    "load_detector",
    "load_settings",
    "mulaw_decode",
    "mulaw_encode",
    "parse_event",
    "remove_signal_handlers",
    "resample",
    "run_file_source",
    "run_listen",
    "run_mic_source",
    "run_pipeline",
    "score_file",
    "score_files",
    "score_samples",
    "serve",
    "to_json",
]


def test_the_public_names_are_pinned() -> None:
    assert sorted(spoofwatch.__all__) == PUBLIC


def test_every_public_name_resolves_and_unknown_ones_do_not() -> None:
    for name in spoofwatch.__all__:
        assert getattr(spoofwatch, name) is not None, name
    assert set(spoofwatch.__all__) <= set(dir(spoofwatch))
    try:
        spoofwatch.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_no_torch() -> None:
    program = "import sys, spoofwatch; spoofwatch.StreamConfig; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_examples_use_only_the_public_api() -> None:
    reaches = []
    for path in sorted((REPO / "examples").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spoofwatch."):
                reaches.append(f"{path.name}:{node.lineno} from {node.module}")
            if isinstance(node, ast.Import):
                reaches += [
                    f"{path.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.startswith("spoofwatch.")
                ]
            if isinstance(node, ast.ImportFrom) and node.module == "spoofwatch":
                reaches += [
                    f"{path.name}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name not in spoofwatch.__all__
                ]
    assert reaches == []
