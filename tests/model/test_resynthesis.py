"""The lfcc-phase-resynth front end: two hidden states (each window and its vocoder remake),
the head's block built from them the same way in training and scoring, a clear error when
the vocoder is missing or fails; with a fake vocoder (unit tests) and with the real FARGAN
(end to end: what FARGAN makes, FARGAN remakes closely)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import EXAMPLE_SPEECH as SPEECH
from fakes import noise, write_fake_vocoder
from spoofwatch.audio.files import load_audio
from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.model.encoders.phase import LfccPhaseEncoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.level import normalise_level
from spoofwatch.model.pooling import mean_std_pool
from spoofwatch.model.resynthesis.encoder import (
    BLOCK_WIDTH,
    KIND,
    LfccPhaseResynthesisEncoder,
    resynthesis_block,
)
from spoofwatch.model.resynthesis.vocoder import VOCODER_ENV, VocoderError, find_vocoder, vocode
from spoofwatch.model.spectral import spectral_block, spectral_width

RATE = 16000


def test_the_states_are_each_window_and_its_remake(fake_vocoder: Path) -> None:
    encoder = LfccPhaseResynthesisEncoder(1.0, vocoder=fake_vocoder)
    windows = np.stack([noise(1.0, seed=s, level=0.05 * (s + 1)) for s in range(3)])
    original, remade = encoder.hidden_states(torch.from_numpy(windows))
    plain = LfccPhaseEncoder(1.0)
    (expected_original,) = plain.hidden_states(torch.from_numpy(windows))
    # The fake vocoder remakes anything as a 200 Hz sine at the window's level.
    remakes = np.stack([vocode(w, fake_vocoder) for w in windows])
    assert remakes.shape == windows.shape
    (expected_remade,) = plain.hidden_states(torch.from_numpy(remakes))
    torch.testing.assert_close(original, expected_original)
    torch.testing.assert_close(remade, expected_remade)
    assert not torch.allclose(original, remade, atol=1e-2)
    assert encoder.remake(windows[0]).shape == windows[0].shape
    with pytest.raises(ModelError, match="expected windows of shape"):
        encoder.hidden_states(torch.zeros(1, 100))


def test_identity_names_the_recipe_not_the_program(
    fake_vocoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = LfccPhaseResynthesisEncoder(1.0, vocoder=fake_vocoder)
    identity = encoder.identity
    assert (identity.kind, identity.name, identity.num_hidden_states, identity.hidden_size) == (
        KIND,
        KIND,
        2,
        80,
    )
    assert identity.weights_sha256 != LfccPhaseEncoder(1.0).identity.weights_sha256
    # Another build of the program (another path, other bytes) computes the same recipe, so
    # a card trained on one machine loads on another.
    (tmp_path / "elsewhere").mkdir()
    other = write_fake_vocoder(tmp_path / "elsewhere" / "fargan")
    other.write_text(other.read_text() + "\n# rebuilt\n")
    monkeypatch.setenv(VOCODER_ENV, str(other))
    built = build_encoder(EncoderSpec(KIND, KIND), 1.0)
    assert isinstance(built, LfccPhaseResynthesisEncoder) and built.vocoder == other
    assert built.identity == identity


def test_a_missing_vocoder_is_a_model_error_naming_the_build_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VOCODER_ENV, str(tmp_path / "no_such_fargan"))
    with pytest.raises(ModelError, match=r"lfcc-phase-resynth .*no_such_fargan.*scripts/build_fargan\.sh"):
        build_encoder(EncoderSpec(KIND, KIND), 4.0)


def test_a_failing_vocoder_names_the_program_and_its_message(fake_vocoder: Path) -> None:
    encoder = LfccPhaseResynthesisEncoder(1.0, vocoder=fake_vocoder)
    failing = r"fake_fargan -features: expected exit status 0, found 3 \(silent input\)"
    with pytest.raises(VocoderError, match=failing):
        encoder.hidden_states(torch.zeros(2, RATE))


def test_the_block_is_the_original_then_its_phase_residual(fake_vocoder: Path) -> None:
    pooled = np.random.default_rng(0).standard_normal((4, 320)).astype(np.float32)
    block = resynthesis_block(pooled)
    assert block.shape == (4, BLOCK_WIDTH) == (4, 200) and block.dtype == np.float32
    np.testing.assert_array_equal(block[:, :160], pooled[:, :160])
    # Phase-coherence bands: mean columns 60-79, std columns 140-159 of each state's block.
    np.testing.assert_array_equal(block[:, 160:180], pooled[:, 60:80] - pooled[:, 220:240])
    np.testing.assert_array_equal(block[:, 180:200], pooled[:, 140:160] - pooled[:, 300:320])
    wrong_shape = r"expected pooled states of shape \(windows, 320\), found \(4, 160\)"
    with pytest.raises(ModelError, match=wrong_shape):
        resynthesis_block(pooled[:, :160])
    encoder = LfccPhaseResynthesisEncoder(1.0, vocoder=fake_vocoder)
    assert spectral_width(encoder) == 200
    np.testing.assert_array_equal(spectral_block(encoder, pooled), block)
    # Other front ends' block is their pooled states as they are.
    plain = LfccPhaseEncoder(1.0)
    assert spectral_width(plain) == 160
    np.testing.assert_array_equal(spectral_block(plain, pooled[:, :160]), pooled[:, :160])


def _real_vocoder() -> Path:
    try:
        return find_vocoder()
    except ConfigError as exc:
        pytest.fail(f"{exc} (scripts/install.sh builds it)")


def _phase_residual(encoder: LfccPhaseResynthesisEncoder, samples: np.ndarray) -> float:
    window = torch.from_numpy(np.ascontiguousarray(samples[: encoder.window_samples], dtype=np.float32))
    levelled = normalise_level(window[None], RATE, -26.0)
    block = spectral_block(encoder, mean_std_pool(encoder.hidden_states(levelled), [0, 1]).numpy())
    return float(np.abs(block[0, 160:180]).mean())


def test_real_fargan_remakes_its_own_output_closer_than_real_speech() -> None:
    """DIRE's premise on the real vocoder: the phase residual of a FARGAN copy of a real
    clip is far smaller than the clip's own (measured 0.014 against 0.054)."""
    vocoder = _real_vocoder()
    encoder = LfccPhaseResynthesisEncoder(4.0, vocoder=vocoder)
    speech = load_audio(SPEECH, RATE).samples
    assert len(speech) >= encoder.window_samples
    real, copy = _phase_residual(encoder, speech), _phase_residual(encoder, vocode(speech, vocoder))
    assert copy < 0.5 * real, (copy, real)
    # Remaking is deterministic: the same window gives the same features.
    assert _phase_residual(encoder, speech) == real
