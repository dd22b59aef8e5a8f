"""LFCC front end against an independent numpy/scipy computation of the same recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dct
from scipy.signal import get_window

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders import lfcc
from spoofwatch.model.encoders.lfcc import LfccEncoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder


def reference_lfcc(wave: np.ndarray) -> np.ndarray:
    x = wave.astype(np.float64)
    x = np.concatenate([x[:1], x[1:] - lfcc.PRE_EMPHASIS * x[:-1]])
    n_frames = 1 + (len(x) - lfcc.N_FFT) // lfcc.HOP
    window = get_window("hamming", lfcc.FRAME, fftbins=False)
    pad = (lfcc.N_FFT - lfcc.FRAME) // 2  # torch.stft centres a short window inside n_fft
    frames = np.stack([x[i * lfcc.HOP : i * lfcc.HOP + lfcc.N_FFT] for i in range(n_frames)])
    windowed = frames * np.pad(window, (pad, lfcc.N_FFT - lfcc.FRAME - pad))
    power = np.abs(np.fft.rfft(windowed, axis=1)) ** 2
    freqs = np.linspace(0, lfcc.SAMPLE_RATE / 2, lfcc.N_FFT // 2 + 1)
    edges = np.linspace(0, lfcc.SAMPLE_RATE / 2, lfcc.N_FILTERS + 2)
    bank = np.stack(
        [
            np.interp(freqs, edges[i : i + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
            for i in range(lfcc.N_FILTERS)
        ]
    )
    cepstra = dct(np.log(power @ bank.T + 1e-10), type=2, norm="ortho", axis=1)[:, : lfcc.N_CEPS]

    def delta(c: np.ndarray) -> np.ndarray:
        padded = np.concatenate([c[:1], c[:1], c, c[-1:], c[-1:]])
        n = len(c)
        return (padded[3 : 3 + n] - padded[1 : 1 + n] + 2 * (padded[4 : 4 + n] - padded[0:n])) / 10.0

    d1 = delta(cepstra)
    return np.concatenate([cepstra, d1, delta(d1)], axis=1)


def test_lfcc_matches_an_independent_numpy_computation() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    encoder = LfccEncoder(window_s=1.0)
    (got,) = encoder.hidden_states(torch.from_numpy(wave[None]))
    want = reference_lfcc(wave)
    assert got.shape == (1, *want.shape) == (1, 97, 60)
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-3, atol=2e-3)


def test_high_band_energy_moves_the_high_filters() -> None:
    """A 7 kHz tone (where vocoders leave traces and a mel scale is coarse) lifts the top
    linear filter's log energy far above what a 300 Hz tone gives."""
    t = np.arange(16000) / 16000
    bank = lfcc.linear_filterbank(lfcc.N_FILTERS, lfcc.N_FFT, lfcc.SAMPLE_RATE).numpy()
    assert bank.shape == (20, 257) and np.allclose(bank.max(axis=1), 1.0, atol=0.05)
    spectra = [np.abs(np.fft.rfft(np.sin(2 * np.pi * f * t[:512]))) ** 2 for f in (300, 7000)]
    low, high = (np.log(bank @ s + 1e-10) for s in spectra)
    assert high[-2] - low[-2] > 10 and low[0] - high[0] > 10


def test_identity_is_a_stable_recipe_hash_and_the_registry_builds_it() -> None:
    a, b = LfccEncoder(4.0), build_encoder(EncoderSpec("lfcc", "lfcc"), 4.0)
    assert a.identity == b.identity and a.identity.hidden_size == 60 and a.identity.num_hidden_states == 1
    assert b.window_samples == 64000
    with pytest.raises(ModelError, match="expected windows of shape"):
        a.hidden_states(torch.zeros(1, 100))
    with pytest.raises(ModelError, match="window_s"):
        LfccEncoder(0.001)
