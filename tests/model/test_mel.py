"""WhisperLogMel against transformers' WhisperFeatureExtractor (which pads to 30 s)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from transformers import WhisperFeatureExtractor

from spoofwatch.model.encoders.mel import HOP_LENGTH, WHISPER_SAMPLE_RATE, WhisperLogMel

SECONDS = 2.0
SAMPLES = round(SECONDS * WHISPER_SAMPLE_RATE)
FRAMES = SAMPLES // HOP_LENGTH
# The last frames see the window's edge: reflect padding here, the 30 s zero padding there.
EDGE_FRAMES = 2
TOLERANCE = 1e-4


def _noise(seed: int) -> NDArray[np.float32]:
    return (np.random.default_rng(seed).standard_normal(SAMPLES) * 0.1).astype(np.float32)


def _sine(freq: float) -> NDArray[np.float32]:
    t = np.arange(SAMPLES) / WHISPER_SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def mel() -> WhisperLogMel:
    return WhisperLogMel(80)


def _reference(audio: NDArray[np.float32]) -> NDArray[np.float32]:
    extractor = WhisperFeatureExtractor(feature_size=80)
    features = extractor(audio, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="np").input_features
    return np.asarray(features[0], dtype=np.float32)


@pytest.mark.parametrize(
    "audio", [_noise(0), _sine(440.0), _sine(1234.5)], ids=["noise", "sine440", "sine1234"]
)
def test_matches_feature_extractor_away_from_the_edge(mel: WhisperLogMel, audio: NDArray[np.float32]) -> None:
    ours = mel(torch.from_numpy(audio)[None])[0].numpy()
    reference = _reference(audio)
    assert ours.shape == (80, FRAMES)
    assert reference.shape == (80, 3000)
    interior = FRAMES - EDGE_FRAMES
    np.testing.assert_allclose(ours[:, :interior], reference[:, :interior], atol=TOLERANCE, rtol=0)


def test_sine_energy_lands_in_the_expected_mel_band(mel: WhisperLogMel) -> None:
    low = mel(torch.from_numpy(_sine(300.0))[None])[0].numpy().mean(axis=1)
    high = mel(torch.from_numpy(_sine(5000.0))[None])[0].numpy().mean(axis=1)
    assert int(np.argmax(low)) < int(np.argmax(high))


def test_batch_equals_single_calls(mel: WhisperLogMel) -> None:
    # Different loudness per item: the dynamic-range clamp must be per window, not per batch.
    items = [_noise(1), _sine(700.0) * 0.01, _noise(2) * 3.0]
    batch = mel(torch.from_numpy(np.stack(items)))
    assert batch.shape == (3, 80, FRAMES)
    for i, item in enumerate(items):
        single = mel(torch.from_numpy(item)[None])[0]
        torch.testing.assert_close(batch[i], single, atol=1e-6, rtol=0)


def test_frames_follow_window_length(mel: WhisperLogMel) -> None:
    out = mel(torch.zeros(2, 4 * WHISPER_SAMPLE_RATE))
    assert out.shape == (2, 80, 400)
    assert torch.isfinite(out).all()


def test_mel_bins_follow_constructor() -> None:
    assert WhisperLogMel(128)(torch.from_numpy(_noise(3))[None]).shape == (1, 128, FRAMES)
