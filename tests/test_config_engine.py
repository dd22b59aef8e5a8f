"""Engine settings for inference workers and the torch threads each one gets."""

from __future__ import annotations

import pytest

from spoofwatch import config
from spoofwatch.config import EngineConfig, load_settings, scoring_threads
from spoofwatch.errors import ConfigError


def test_threads_are_shared_out_between_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.os, "cpu_count", lambda: 8)
    assert scoring_threads(EngineConfig(workers=1)) is None  # the card's or torch's default
    assert scoring_threads(EngineConfig(workers=2)) == 4
    assert scoring_threads(EngineConfig(workers=16)) == 1
    assert scoring_threads(EngineConfig(workers=2, num_threads=3)) == 3  # explicit wins


def test_workers_come_from_the_environment_and_are_validated() -> None:
    assert load_settings(env={"SPOOFWATCH_ENGINE_WORKERS": "2"}).engine.workers == 2
    with pytest.raises(ConfigError, match=r"engine\.workers"):
        load_settings(env={"SPOOFWATCH_ENGINE_WORKERS": "0"})


def test_quantization_and_backend_override_the_card_and_are_validated() -> None:
    from spoofwatch.cli import _load_scorer

    assert EngineConfig().quantization == "" and EngineConfig().backend == ""  # the card's
    env = {"SPOOFWATCH_ENGINE_QUANTIZATION": "none", "SPOOFWATCH_ENGINE_BACKEND": "torch"}
    settings = load_settings(env=env)
    assert (settings.engine.quantization, settings.engine.backend) == ("none", "torch")
    detector = _load_scorer(settings)  # the shipped card says int8-window
    assert detector.settings.quantization == "none" and detector.encoder.identity.name == "whisper-base"
    assert _load_scorer(load_settings(env={})).settings.quantization == "int8-window"
    with pytest.raises(ConfigError, match=r"engine\.backend: expected one of \('torch', 'onnxruntime'\)"):
        load_settings(env={"SPOOFWATCH_ENGINE_BACKEND": "cuda"})
    with pytest.raises(ConfigError, match=r"engine\.quantization"):
        load_settings(env={"SPOOFWATCH_ENGINE_QUANTIZATION": "int4"})


def test_device_comes_from_the_environment_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from spoofwatch.cli import _load_scorer
    from spoofwatch.errors import ModelError

    assert EngineConfig().device == ""  # the CPU
    settings = load_settings(env={"SPOOFWATCH_ENGINE_DEVICE": "cuda:1"})
    assert settings.engine.device == "cuda:1"
    assert config.detector_options(settings.engine)["device"] == "cuda:1"
    with pytest.raises(ConfigError, match=r"engine\.device: expected cpu, cuda, cuda:N or auto"):
        load_settings(env={"SPOOFWATCH_ENGINE_DEVICE": "gpu0"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"device 'cuda:1': expected a CUDA GPU"):
        _load_scorer(settings)
    from spoofwatch.cli import _server_settings, build_parser

    for command in (["serve"], ["listen", "--device", "2"]):  # listen's --device: the microphone
        args = build_parser().parse_args([*command, "--encoder-device", "auto"])
        assert _server_settings(args).engine.device == "auto"
    bench = build_parser().parse_args(["bench", "--encoder-device", "cuda"])
    assert bench.engine_device == "cuda"


def test_a_node_drift_reference_comes_from_the_flag_the_environment_or_the_file() -> None:
    from spoofwatch.cli import _server_settings, build_parser

    args = build_parser().parse_args(["serve", "--drift-reference", "node.json"])
    assert _server_settings(args).engine.drift_reference == "node.json"
    assert _server_settings(build_parser().parse_args(["serve"])).engine.drift_reference == ""
    env = {"SPOOFWATCH_ENGINE_DRIFT_REFERENCE": "/srv/ref.json"}
    assert load_settings(env=env).engine.drift_reference == "/srv/ref.json"
