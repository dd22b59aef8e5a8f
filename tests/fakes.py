"""Test doubles shared by the tests.

``FakeScorer`` stands in for the detector: it calls tonal audio (a sine) spoof and
noise-like audio bona fide, using spectral flatness, so tests can build streams whose
"real" and "fake" parts are known without running a neural network.
``save_tiny_wav2vec2`` writes a tiny randomly initialised Hugging Face checkpoint for the
tests that need a real encoder on disk; ``write_fake_vocoder`` a program that speaks the
FARGAN demo's file formats.
"""

from __future__ import annotations

import csv
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spoofwatch.model.resynthesis.vocoder import FRAME_VALUES, PITCH_INDEX
from spoofwatch.train.corpus import LabelledItem

TINY_HIDDEN = 32
# A real LibriSpeech clip shipped in examples/ (10 s, 16 kHz).
EXAMPLE_SPEECH = (
    Path(__file__).resolve().parents[1] / "examples" / "audio" / "real_librispeech_1502-122615-0000.flac"
)


def save_tiny_wav2vec2(path: Path, seed: int = 0) -> None:
    """A randomly initialised two-layer wav2vec2 (width ``TINY_HIDDEN``) saved at ``path``."""
    # Imported here: the streaming tests that use the other doubles need no torch.
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(path)


def save_tiny_detector(
    root: Path, window_s: float, layers: tuple[int, ...], calibration_scale: float = 1.0
) -> Path:
    """A detector card at ``root/detector`` over a tiny wav2vec2 (``root/encoder``), its
    linear head fitted to random features of the right width: enough to load and score."""
    from spoofwatch.model.artifact import save_detector
    from spoofwatch.model.calibration import AffineCalibration
    from spoofwatch.model.detector import DetectorSettings
    from spoofwatch.model.encoders.hf import HFEncoder
    from spoofwatch.model.encoders.registry import EncoderSpec
    from spoofwatch.model.head import LinearHead
    from spoofwatch.model.pooling import pooled_dim

    save_tiny_wav2vec2(root / "encoder")
    encoder = HFEncoder(str(root / "encoder"), window_s=window_s)
    width = pooled_dim(len(layers), TINY_HIDDEN)
    rng = np.random.default_rng(0)
    head = LinearHead(C=1.0).fit(rng.standard_normal((20, width)).astype(np.float32), np.arange(20) % 2)
    return save_detector(
        root / "detector",
        head=head,
        calibration=AffineCalibration(calibration_scale, 0.0),
        settings=DetectorSettings(window_s=window_s, hop_s=window_s / 2, layers=layers),
        encoder_spec=EncoderSpec("hf", str(root / "encoder")),
        encoder_identity=encoder.identity,
    )


class FakeScorer:
    def __init__(
        self, sample_rate: int = 16000, window_s: float = 1.0, threshold: float = 0.5, delay_s: float = 0.0
    ) -> None:
        self._sample_rate = sample_rate
        self._window_samples = round(window_s * sample_rate)
        self._threshold = threshold
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.thread_names: set[str] = set()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def window_samples(self) -> int:
        return self._window_samples

    @property
    def threshold(self) -> float:
        return self._threshold

    def stream_context(self) -> None:
        return None

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        self.calls.append(len(windows))
        self.thread_names.add(threading.current_thread().name)
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        power = np.abs(np.fft.rfft(windows, axis=1)) ** 2 + 1e-12
        flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
        return (12.0 * (flatness - 0.2)).astype(np.float64)


class FillerScorer(FakeScorer):
    """FakeScorer, except that a window holding a run of at least ``filler_run`` exact
    zeros scores spoof (LLR -6): what the real encoder does with zeros filled into a gap
    (genuine speech with 1 s of zeros scored p_spoof 0.91-0.99)."""

    filler_run = 40

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        scores = super().score_windows(windows)
        filled = np.array([has_zero_run(w, self.filler_run) for w in windows])
        return np.where(filled, -6.0, scores)


def has_zero_run(samples: NDArray[np.float32], run: int) -> bool:
    quiet = np.concatenate(([0], (samples == 0).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(quiet))
    return bool(np.any(edges[1::2] - edges[::2] >= run))


def noise(seconds: float, sample_rate: int = 16000, seed: int = 0, level: float = 0.1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * sample_rate)) * level).astype(np.float32)


def tone(
    seconds: float, sample_rate: int = 16000, freq: float = 440.0, level: float = 0.3
) -> NDArray[np.float32]:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# Features: 36 float32 per 160 samples, the pitch value saying 200 Hz; synthesis: a sine at
# the pitch each frame's value says (period = 256 / 2 ** (value + 1.5)), at a fixed level.
# Silent input fails, as a broken vocoder would.
FAKE_VOCODER = f"""#!{sys.executable}
import math, sys
import numpy as np
mode, src, dst = sys.argv[1:4]
if mode == "-features":
    pcm = np.fromfile(src, dtype="<i2")
    if not np.any(pcm):
        sys.stderr.write("silent input\\n")
        sys.exit(3)
    frames = np.zeros((len(pcm) // 160, {FRAME_VALUES}), dtype="<f4")
    frames[:, {PITCH_INDEX}] = math.log2(256 / 80) - 1.5
    frames.tofile(dst)
else:
    frames = np.fromfile(src, dtype="<f4").reshape(-1, {FRAME_VALUES})
    period = 256 / 2 ** (frames[:, {PITCH_INDEX}].astype(float) + 1.5)
    freq = np.repeat(16000 / period, 160)
    phase = 2 * np.pi * np.cumsum(freq) / 16000
    (3000 * np.sin(phase)).astype("<i2").tofile(dst)
"""


def write_fake_vocoder(path: Path) -> Path:
    """FAKE_VOCODER as an executable at ``path``."""
    path.write_text(FAKE_VOCODER)
    path.chmod(0o755)
    return path


class FeatureFakeScorer(FakeScorer):
    """FakeScorer that also hands back pooled "features" (model.scorer.FeatureScorer):
    each window's mean, standard deviation, peak and spectral flatness score, so a test
    can tell which window's features were stored."""

    def score_windows_with_features(
        self, windows: NDArray[np.float32], companions: NDArray[np.float32] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        scores = self.score_windows(windows)
        return scores, window_features(windows, scores)


def window_features(windows: NDArray[np.float32], scores: NDArray[np.float64]) -> NDArray[np.float32]:
    stats = [windows.mean(axis=1), windows.std(axis=1), np.abs(windows).max(axis=1), scores]
    return np.stack(stats, axis=1).astype(np.float32)


# A tiny labelled corpus for training tests: bona fide = white noise, spoof = a tone.
RATE = 16000


def clip(kind: str, seed: int, seconds: float = 3.0) -> NDArray[np.float32]:
    """``bonafide``: white noise; ``spoof``: a tone in faint noise; ``novel``: low-passed
    noise, synthetic audio the base card has never seen (it looks like bona fide to it)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    noise = 0.1 * rng.standard_normal(t.size)
    if kind == "spoof":
        return (0.3 * np.sin(2 * np.pi * rng.uniform(300, 900) * t) + 0.02 * noise).astype(np.float32)
    if kind == "novel":
        smooth = np.convolve(noise, np.ones(12) / 12, mode="same") * 3.0
        return smooth.astype(np.float32)
    return noise.astype(np.float32)


def write_manifest(path: Path, items: Sequence[LabelledItem]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "utt_id", "split", "source"])
        for it in items:
            writer.writerow([it.path, it.label, it.utt_id, it.split, it.source])
    return path
