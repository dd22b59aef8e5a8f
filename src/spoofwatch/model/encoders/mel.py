"""Whisper's log-mel front end in torch, vectorised over a batch of windows.

Matches ``transformers.WhisperFeatureExtractor`` (n_fft 400, hop 160, Slaney mel,
log10, dynamic range clamp of 8, (x + 4) / 4) except that it does not pad to 30 s: each
window yields ``window_samples / 160`` frames.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

N_FFT = 400
HOP_LENGTH = 160
WHISPER_SAMPLE_RATE = 16000


class WhisperLogMel(torch.nn.Module):
    """Batched log-mel spectrogram with Whisper's normalisation."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        filters = mel_filter_bank(
            num_frequency_bins=1 + N_FFT // 2,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=WHISPER_SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.filters: torch.Tensor
        self.window: torch.Tensor
        self.register_buffer("filters", torch.from_numpy(np.asarray(filters, dtype=np.float32)))
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.n_mels = n_mels

    def log10_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) → (batch, n_mels, samples // 160) log10 mel power, before
        Whisper's dynamic-range clamp and scaling."""
        stft = torch.stft(
            waveforms,
            N_FFT,
            HOP_LENGTH,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = stft[..., :-1].abs() ** 2
        mel = torch.einsum("fm,bft->bmt", self.filters, power)
        return torch.clamp(mel, min=1e-10).log10()

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) float32 → (batch, n_mels, samples // 160)."""
        log_spec = self.log10_mel(waveforms)
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0
