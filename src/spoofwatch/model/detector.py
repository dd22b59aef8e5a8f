"""The detector: encoder + pooling + head (linear or MLP) + calibration, scoring batches of windows.

One process holds one Detector; it has no per-stream state, so any number of streams can
share it (the streaming batcher calls it from one worker thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.backend import backend_of
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.device import device_of
from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.heads import Head
from spoofwatch.model.level import check_target, levelled_pair
from spoofwatch.model.pooling import mean_std_pool, stored_precision
from spoofwatch.model.quantize import quantization_of
from spoofwatch.model.resynthesis.remake import StreamedRemake
from spoofwatch.model.resynthesis.stream_context import RemakeStream
from spoofwatch.model.runtime_modes import QUANTIZATION_MODES
from spoofwatch.model.scorer import StreamContext, WindowScorer
from spoofwatch.model.spectral import front_end_states, remake_of, spectral_block, spectral_width

__all__ = ["Detector", "DetectorSettings", "WindowScorer"]


@dataclass(frozen=True)
class DetectorSettings:
    """Window geometry, which hidden states the head reads, the decision threshold on
    ``p_spoof`` (0.5 = the Bayes decision for equal priors and costs) and how inference
    runs: at most ``max_batch`` windows per encoder call, ``quantization`` ``none``,
    ``int8`` or ``int8-all`` (dynamic int8 Linear layers, see model.quantize) and
    ``num_threads`` torch intra-op threads in the scoring thread (0 = leave torch alone);
    ``backend`` ``torch`` or ``onnxruntime`` (model.backend). ``level_dbfs``: bring every
    window to this active speech level before the encoders (model.level); None = as it
    comes, as cards from before the level normalisation were trained."""

    window_s: float
    hop_s: float
    layers: tuple[int, ...]
    threshold: float = 0.5
    max_batch: int = 16
    quantization: str = "none"
    num_threads: int = 0
    backend: str = "torch"  # or "onnxruntime" (model.backend)
    level_dbfs: float | None = None
    device: str = "cpu"  # where the encoder runs (model.device): cpu, cuda, cuda:N


class Detector:
    """Scores fixed-length windows with a frozen encoder and a calibrated head (linear or MLP).

    With a ``spectral`` front end (LFCC, phase coherence, vocoder residual), the head reads
    the encoder's pooled layers followed by the spectral block (``model.spectral``): one
    head over both. A front end that reads each window's streamed remake
    (``remake`` is then set) takes the remakes beside the windows.
    """

    def __init__(
        self,
        encoder: Encoder,
        head: Head,
        calibration: AffineCalibration,
        settings: DetectorSettings,
        card: dict[str, Any] | None = None,
        spectral: Encoder | None = None,
    ) -> None:
        identity = encoder.identity
        expected_dim = len(settings.layers) * 2 * identity.hidden_size
        spectral_dim = 0 if spectral is None else spectral_width(spectral)
        if head.n_features_in_ != expected_dim + spectral_dim:
            raise ModelError(
                f"head expects {head.n_features_in_} features, but {len(settings.layers)} "
                f"layers of width {identity.hidden_size} give {expected_dim}"
                + (f" and the spectral front end {spectral_dim}" if spectral is not None else "")
            )
        if spectral is not None and spectral.window_samples != encoder.window_samples:
            raise ModelError(
                f"the spectral front end takes {spectral.window_samples} samples per window, "
                f"the encoder {encoder.window_samples}"
            )
        if not 0.0 < settings.threshold < 1.0:
            raise ModelError(f"threshold must be within (0, 1), found {settings.threshold}")
        if settings.max_batch < 1:
            raise ModelError(f"max_batch must be >= 1, found {settings.max_batch}")
        if settings.num_threads < 0:
            raise ModelError(f"num_threads must be >= 0 (0 = torch default), found {settings.num_threads}")
        if settings.level_dbfs is not None:
            check_target(settings.level_dbfs)
        if settings.quantization not in QUANTIZATION_MODES:
            raise ModelError(
                f"quantization must be one of {QUANTIZATION_MODES}, found {settings.quantization!r}"
            )
        if settings.quantization != quantization_of(identity):
            raise ModelError(
                f"settings say quantization={settings.quantization!r} but the encoder is "
                f"{identity.name!r} ({quantization_of(identity)}); quantise it with apply_quantization"
            )
        if settings.device != device_of(encoder):
            raise ModelError(
                f"settings say device={settings.device!r} but the encoder runs on {device_of(encoder)!r}; "
                "move it with model.device.DeviceEncoder"
            )
        if settings.backend != backend_of(identity):
            raise ModelError(
                f"settings say backend={settings.backend!r} but the encoder {identity.name!r} runs on "
                f"{backend_of(identity)}; build it with model.backend.runtime_encoder"
            )
        self.encoder = encoder
        self.spectral = spectral
        self.head = head
        self.calibration = calibration
        self.settings = settings
        self.card: dict[str, Any] = dict(card or {})

    @property
    def sample_rate(self) -> int:
        return self.encoder.identity.sample_rate

    @property
    def window_samples(self) -> int:
        return self.encoder.window_samples

    @property
    def threshold(self) -> float:
        return self.settings.threshold

    @property
    def remake(self) -> StreamedRemake | None:
        """The streamed remake the spectral front end reads beside each window, or None."""
        return remake_of(self.spectral)

    def stream_context(self) -> StreamContext | None:
        """A new stream's context: for a front end that reads each window's streamed remake,
        the stream's remade blocks and the windows waiting for their context audio."""
        remake = self.remake
        return None if remake is None else RemakeStream(remake, self.window_samples)

    def _as_batch(self, windows: NDArray[np.float32], what: str = "windows") -> NDArray[np.float32]:
        batch = np.asarray(windows, dtype=np.float32)
        if batch.ndim == 1:
            batch = batch[None, :]
        if batch.ndim != 2 or batch.shape[1] != self.window_samples:
            raise ModelError(
                f"expected {what} of shape (batch, {self.window_samples}) at "
                f"{self.sample_rate} Hz, found {batch.shape}"
            )
        if not np.isfinite(batch).all():
            raise ModelError(f"{what} contain NaN or Inf samples; expected finite audio")
        return batch

    def features(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """Pooled per-layer statistics, (batch, features); ``remakes``: each window's
        streamed remake, for a detector whose front end reads them (``remake``)."""
        batch = self._as_batch(windows)
        remade = None if remakes is None else self._as_batch(remakes, "remakes")
        if remade is not None and len(remade) != len(batch):
            raise ModelError(f"expected one remake per window, found {len(remade)} for {len(batch)}")
        if remade is not None and self.spectral is None:
            raise ModelError("this detector reads windows alone; expected no remakes")
        out: list[NDArray[np.float32]] = []
        threads = self.settings.num_threads
        if threads and torch.get_num_threads() != threads:
            # Set here, in the thread that scores: the streaming worker is not the thread
            # that built the detector.
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for start in range(0, len(batch), self.settings.max_batch):
                end = start + self.settings.max_batch
                chunk, remake_chunk = levelled_pair(
                    torch.from_numpy(batch[start:end]),
                    None if remade is None else torch.from_numpy(remade[start:end]),
                    self.sample_rate,
                    self.settings.level_dbfs,
                )
                states = self.encoder.hidden_states(chunk)
                pooled = stored_precision(mean_std_pool(states, self.settings.layers).cpu().numpy())
                if self.spectral is not None:
                    spectral_states = front_end_states(self.spectral, chunk, remake_chunk)
                    every_state = stored_precision(
                        mean_std_pool(spectral_states, range(len(spectral_states))).numpy()
                    )
                    pooled = np.concatenate([pooled, spectral_block(self.spectral, every_state)], axis=1)
                out.append(pooled)
        if not out:
            return np.zeros((0, self.head.n_features_in_), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def score_features(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        return self.calibration.apply(self.head.decision_function(features))

    def score_windows(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> NDArray[np.float64]:
        return self.score_features(self.features(windows, remakes))

    def score_windows_with_features(
        self, windows: NDArray[np.float32], remakes: NDArray[np.float32] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """Scores and the pooled features they were read from (model.scorer.FeatureScorer)."""
        features = self.features(windows, remakes)
        return self.score_features(features), features

    def label(self, p_spoof: float) -> str:
        return "spoof" if p_spoof >= self.settings.threshold else "bonafide"
