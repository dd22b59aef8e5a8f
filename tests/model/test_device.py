"""Where the encoder runs (``spoofwatch.model.device``): names, the CPU default, a GPU when
torch has one, and what a GPU changes (torch, int8 emulated) or refuses (onnxruntime)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import EXAMPLE_SPEECH, save_tiny_detector
from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ModelError
from spoofwatch.model import artifact
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector, DetectorSettings
from spoofwatch.model.device import DeviceEncoder, device_of, resolve_device
from spoofwatch.model.int8_emulation import EmulatedDynamicLinear

WINDOW_S = 0.5
SETTINGS = DetectorSettings(window_s=WINDOW_S, hop_s=0.25, layers=(0, 2), threshold=0.4)
CUDA = torch.cuda.is_available()


def speech_windows(size: int, hop: int = 16000) -> np.ndarray:
    """Overlapping windows of the example speech clip."""
    audio = load_audio(EXAMPLE_SPEECH, 16000).samples
    return np.stack([audio[i : i + size] for i in range(0, len(audio) - size + 1, hop)])


def windows(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 8000)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector card whose encoder is a randomly initialised wav2vec2."""
    return save_tiny_detector(tmp_path_factory.mktemp("device"), WINDOW_S, SETTINGS.layers, 0.7)


def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_device_names_resolve_to_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    no_gpu(monkeypatch)
    assert resolve_device(None) == resolve_device("") == resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelError, match=r"device 'cuda': expected a CUDA GPU.*is_available\(\) is False"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match=r"device: expected cpu, cuda, cuda:N or auto, found 'gpu'"):
        resolve_device("gpu")


def test_a_gpu_is_named_by_index_and_a_missing_one_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ModelError, match=r"expected one of cuda:0\.\.cuda:1, torch sees 2 GPU"):
        resolve_device("cuda:2")


def test_the_device_wrapper_moves_windows_and_keeps_the_identity(card: Path) -> None:
    cpu = load_detector(card)
    assert cpu.settings.device == "cpu" and device_of(cpu.encoder) == "cpu"
    assert cpu.card["inference"]["device"] == "cpu"
    inner = load_detector(card).encoder
    seen: list[torch.device] = []
    hidden_states = inner.hidden_states

    def spy(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen.append(batch.device)
        return hidden_states(batch)

    inner.hidden_states = spy  # type: ignore[method-assign]
    moved = DeviceEncoder(inner, "cpu")
    assert moved.identity == inner.identity and moved.window_samples == inner.window_samples
    wrapped = Detector(moved, cpu.head, cpu.calibration, cpu.settings)
    np.testing.assert_array_equal(wrapped.score_windows(windows(3, 1)), cpu.score_windows(windows(3, 1)))
    assert seen == [torch.device("cpu")]


def test_settings_must_name_the_device_the_encoder_is_on(card: Path) -> None:
    cpu = load_detector(card)
    with pytest.raises(ModelError, match=r"settings say device='cuda' but the encoder runs on 'cpu'"):
        Detector(cpu.encoder, cpu.head, cpu.calibration, replace(SETTINGS, device="cuda"))


def test_asking_for_a_gpu_without_one_is_refused_before_loading(
    card: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_gpu(monkeypatch)
    with pytest.raises(ModelError, match=r"device 'cuda': expected a CUDA GPU"):
        load_detector(card, device="cuda")
    assert load_detector(card, device="auto").settings.device == "cpu"


def test_on_a_gpu_the_encoder_runs_with_torch_its_int8_layers_emulated(
    card: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a GPU here, torch's ``meta`` device stands in for one: loading moves every
    parameter there, and int8 layers (CPU-only in torch) become their float32 emulation."""
    monkeypatch.setattr(artifact, "resolve_device", lambda name: "meta")
    loaded = load_detector(card, device="cuda")
    assert loaded.settings.device == "meta" and loaded.card["inference"]["device"] == "meta"
    assert isinstance(loaded.encoder, DeviceEncoder) and loaded.settings.quantization == "none"
    assert all(p.device.type == "meta" for p in loaded.encoder.module.parameters())
    int8 = load_detector(card, device="cuda", quantization="int8-window")
    assert int8.settings.quantization == "int8-window"
    assert isinstance(int8.encoder, DeviceEncoder)
    layers = [m for m in int8.encoder.module.modules() if isinstance(m, EmulatedDynamicLinear)]
    assert layers and all(m.weight_int.device.type == "meta" for m in layers)
    assert not any(type(m).__name__ == "PerWindowLinear" for m in int8.encoder.module.modules())
    with pytest.raises(ModelError, match=r"expected backend 'torch' on a GPU, found 'onnxruntime'"):
        load_detector(card, device="cuda", backend="onnxruntime")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (device sessions: scripts/gpu_check.sh)")
def test_the_default_card_on_a_gpu_scores_as_on_the_cpu() -> None:
    gpu = load_detector("default", device="cuda")
    cpu = load_detector("default")
    audio = speech_windows(cpu.window_samples)
    difference = np.abs(gpu.score_windows(audio) - cpu.score_windows(audio))
    assert difference.mean() < 0.1, difference  # the emulation's rounding, as on the CPU
    assert gpu.card["inference"]["device"] == "cuda" and gpu.settings.quantization == "int8-window"
