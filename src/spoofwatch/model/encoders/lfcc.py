"""Linear-frequency cepstral coefficients (LFCC) as a parameter-free "encoder".

The ASVspoof baseline front end: 20 ms Hamming frames every 10 ms, 512-point FFT, 20
linear triangular filters up to Nyquist, log, DCT-II, plus deltas and double deltas
(60 values per frame). Spectral detail that neural vocoders get wrong sits in the high
linear bands a mel scale squeezes, which is why it generalises differently from a
speech encoder; fused with one, it covers other errors. Written with torch because no
maintained library here computes it on batched tensors (torchaudio is ruled out).
"""

from __future__ import annotations

import hashlib
import math

import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.base import EncoderIdentity, TorchEncoder, check_windows

SAMPLE_RATE = 16000
FRAME = 320
HOP = 160
N_FFT = 512
N_FILTERS = 20
N_CEPS = 20
PRE_EMPHASIS = 0.97
VERSION = 1


def linear_filterbank(n_filters: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(n_filters, n_fft // 2 + 1) triangular filters evenly spaced from 0 to Nyquist."""
    bins = n_fft // 2 + 1
    freqs = torch.linspace(0.0, sample_rate / 2, bins, dtype=torch.float64)
    edges = torch.linspace(0.0, sample_rate / 2, n_filters + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def dct_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """Orthonormal DCT-II as an (n_in, n_out) matrix."""
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def deltas(features: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over frames of (batch, frames, dim), edges repeated (as HTK)."""
    padded = torch.cat(
        [features[:, :1].expand(-1, width, -1), features, features[:, -1:].expand(-1, width, -1)], dim=1
    )
    frames = features.shape[1]
    num = torch.zeros_like(features)
    for k in range(1, width + 1):
        num += k * (padded[:, width + k : width + k + frames] - padded[:, width - k : width - k + frames])
    return num / (2 * sum(k * k for k in range(1, width + 1)))


class LfccEncoder(TorchEncoder):
    """LFCC frames as a single hidden state of width 60 (20 cepstra, deltas, double deltas)."""

    window: torch.Tensor
    filters: torch.Tensor
    dct: torch.Tensor

    def __init__(self, window_s: float = 4.0) -> None:
        super().__init__()
        samples = round(window_s * SAMPLE_RATE)
        if samples < FRAME or abs(samples - window_s * SAMPLE_RATE) > 1e-6:
            raise ModelError(
                f"window_s must be a whole number of samples >= {FRAME / SAMPLE_RATE} s, found {window_s}"
            )
        self._window_samples = samples
        self.register_buffer("window", torch.hamming_window(FRAME, periodic=False), persistent=False)
        self.register_buffer("filters", linear_filterbank(N_FILTERS, N_FFT, SAMPLE_RATE), persistent=False)
        self.register_buffer("dct", dct_matrix(N_CEPS, N_FILTERS), persistent=False)
        recipe = f"lfcc-v{VERSION}-{FRAME}-{HOP}-{N_FFT}-{N_FILTERS}-{N_CEPS}-{PRE_EMPHASIS}"
        self._identity = EncoderIdentity(
            kind="lfcc",
            name="lfcc",
            weights_sha256=hashlib.sha256(recipe.encode()).hexdigest(),
            sample_rate=SAMPLE_RATE,
            num_hidden_states=1,
            hidden_size=3 * N_CEPS,
        )

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        x = windows.float()
        x = torch.cat([x[:, :1], x[:, 1:] - PRE_EMPHASIS * x[:, :-1]], dim=1)
        spectrum = torch.stft(
            x, N_FFT, hop_length=HOP, win_length=FRAME, window=self.window, center=False, return_complex=True
        )
        power = spectrum.real.square() + spectrum.imag.square()  # (batch, bins, frames)
        energies = torch.einsum("fb,nbt->ntf", self.filters, power)
        cepstra = torch.log(energies + 1e-10) @ self.dct  # (batch, frames, 20)
        d1 = deltas(cepstra)
        return (torch.cat([cepstra, d1, deltas(d1)], dim=2),)
