"""The lfcc-phase front end: LFCC unchanged, plus per-band phase coherence that is high for
steady partials, low where the phase is rebuilt at random, and blind to gain and to a fixed
linear channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders import lfcc
from spoofwatch.model.encoders.lfcc import LfccEncoder
from spoofwatch.model.encoders.phase import PHASE_BANDS, LfccPhaseEncoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder

RATE = 16000


def harmonic_tone(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A voiced-like steady tone: harmonics of f0 up to 7 kHz with random fixed phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    wave = sum(
        np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, int(7000 / f0))
    )
    return (0.1 * wave / np.abs(wave).max()).astype(np.float32)


def scrambled_phase(wave: np.ndarray, seed: int = 1) -> np.ndarray:
    """The same magnitudes every 32 ms frame with random phases, overlap-added: the phase
    a vocoder with no phase model would give."""
    rng = np.random.default_rng(seed)
    n, hop = 512, 128
    window = np.hanning(n)
    out = np.zeros(len(wave) + n)
    for start in range(0, len(wave) - n, hop):
        spectrum = np.fft.rfft(wave[start : start + n] * window)
        spectrum = np.abs(spectrum) * np.exp(1j * rng.uniform(0, 2 * np.pi, len(spectrum)))
        out[start : start + n] += np.fft.irfft(spectrum, n) * window
    out = out[: len(wave)]
    return (0.1 * out / np.abs(out).max()).astype(np.float32)


def coherence(encoder: LfccPhaseEncoder, wave: np.ndarray) -> np.ndarray:
    """Frames' mean coherence per band, (bands,)."""
    (states,) = encoder.hidden_states(torch.from_numpy(wave)[None])
    return states[0, :, 3 * lfcc.N_CEPS :].mean(0).numpy()


def test_shape_identity_and_registry() -> None:
    encoder = LfccPhaseEncoder(window_s=1.0)
    built = build_encoder(EncoderSpec("lfcc-phase", "lfcc-phase"), 1.0)
    assert built.identity == encoder.identity
    assert encoder.identity.hidden_size == 3 * lfcc.N_CEPS + PHASE_BANDS == 80
    assert encoder.identity.weights_sha256 != LfccEncoder(1.0).identity.weights_sha256
    (states,) = encoder.hidden_states(torch.zeros(3, 16000))
    (cepstral,) = LfccEncoder(1.0).hidden_states(torch.zeros(3, 16000))
    assert states.shape == (3, cepstral.shape[1], 80)
    with pytest.raises(ModelError, match="expected windows of shape"):
        encoder.hidden_states(torch.zeros(1, 100))
    with pytest.raises(ModelError, match="window_s"):
        LfccPhaseEncoder(0.001)


def test_the_lfcc_part_is_the_lfcc_encoder() -> None:
    wave = torch.from_numpy(harmonic_tone(1.0))[None]
    (states,) = LfccPhaseEncoder(1.0).hidden_states(wave)
    (cepstral,) = LfccEncoder(1.0).hidden_states(wave)
    assert torch.equal(states[..., : 3 * lfcc.N_CEPS], cepstral)


def test_steady_partials_are_coherent_and_scrambled_phase_is_not() -> None:
    encoder = LfccPhaseEncoder(window_s=1.0)
    tone = harmonic_tone(1.0)
    steady, scrambled = coherence(encoder, tone), coherence(encoder, scrambled_phase(tone))
    speech_bands = slice(0, 14)  # harmonics reach 7 kHz; 20 bands span 0-8 kHz
    assert steady[speech_bands].min() > 0.9
    assert scrambled[speech_bands].mean() < steady[speech_bands].mean() - 0.3


def test_gain_and_a_fixed_linear_channel_leave_the_measure_nearly_unchanged() -> None:
    encoder = LfccPhaseEncoder(window_s=1.0)
    tone = harmonic_tone(1.0, f0=180.0, seed=3)
    base = coherence(encoder, tone)
    louder = coherence(encoder, 8.0 * tone)
    # A short FIR colouring (a crude handset response) adds a fixed phase per bin.
    coloured = lfilter([1.0, -0.6, 0.25], [1.0], tone).astype(np.float32)
    filtered = coherence(encoder, coloured)
    bands = slice(0, 14)
    np.testing.assert_allclose(louder[bands], base[bands], atol=1e-4)
    assert np.abs(filtered[bands] - base[bands]).max() < 0.05
