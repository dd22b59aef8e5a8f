"""The float32 emulation of torch's dynamic int8 Linear layers (what a GPU runs): exact
layer by layer against fbgemm on this CPU, and close to the int8 card on real speech."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from fakes import EXAMPLE_SPEECH
from spoofwatch.audio.files import load_audio
from spoofwatch.model.artifact import load_detector
from spoofwatch.model.detector import Detector
from spoofwatch.model.int8_emulation import EmulatedDynamicLinear, emulate_dynamic_int8, input_qparams
from spoofwatch.model.quantize import PerWindowLinear, quantize_linear_int8


def dynamic_layer(seed: int, bias: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48, bias=bias))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_linear_int8(model, ["0"])[0]


@pytest.mark.parametrize("bias", [True, False])
def test_a_layer_equals_fbgemm(bias: bool) -> None:
    layer = dynamic_layer(0, bias)
    inputs = torch.randn(2, 30, 64) * 3 + 0.7
    with torch.inference_mode():
        expected = layer(inputs)
        got = EmulatedDynamicLinear(layer, per_window=False)(inputs)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_per_window_scales_equal_the_per_window_layer() -> None:
    layer = dynamic_layer(1)
    inputs = torch.randn(3, 20, 64) * torch.tensor([0.1, 1.0, 8.0]).view(3, 1, 1)
    with torch.inference_mode():
        expected = PerWindowLinear(layer)(inputs)
        got = EmulatedDynamicLinear(layer, per_window=True)(inputs)
        whole = EmulatedDynamicLinear(layer, per_window=False)(inputs)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(whole, expected, atol=1e-3)  # one scale for all would differ


def test_input_parameters_hold_zero_and_a_constant_input() -> None:
    scale, zero = input_qparams(torch.tensor(0.5), torch.tensor(2.0))  # range widened to 0..2
    assert scale.item() == pytest.approx(2.0 / 127) and zero.item() == 0
    scale, zero = input_qparams(torch.tensor(-1.0), torch.tensor(-1.0))
    assert scale.item() == pytest.approx(1.0 / 127) and zero.item() == 127
    scale, zero = input_qparams(torch.tensor(0.0), torch.tensor(0.0))
    assert scale.item() == pytest.approx(0.1) and zero.item() == 0  # fbgemm's fallback scale


def test_the_default_card_emulated_scores_as_the_int8_card() -> None:
    card = load_detector("default")
    assert card.settings.quantization == "int8-window"
    encoder = copy.deepcopy(card.encoder)
    assert emulate_dynamic_int8(encoder.module) == 24  # type: ignore[attr-defined]
    emulated = Detector(
        encoder, card.head, card.calibration, card.settings, card.card, spectral=card.spectral
    )
    plain = load_detector("default", quantization="none")
    audio = load_audio(EXAMPLE_SPEECH, 16000).samples
    size = card.window_samples
    windows = np.stack([audio[i : i + size] for i in range(0, len(audio) - size + 1, 8000)])
    reference = card.score_windows(windows)
    off_emulated = np.abs(emulated.score_windows(windows) - reference)
    off_float = np.abs(plain.score_windows(windows) - reference)
    # Layer by layer the emulation is exact; through five layers a last-bit difference
    # flips a few roundings, so scores differ by a few hundredths of an LLR, where the
    # float32 encoder is tenths away (docs/pool.md).
    assert off_emulated.mean() < 0.1 and off_emulated.mean() < off_float.mean() / 3, (off_emulated, off_float)
