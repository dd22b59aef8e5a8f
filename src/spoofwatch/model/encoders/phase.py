"""LFCC frames plus per-band phase coherence: the ``lfcc-phase`` spectral front end.

Both the speech encoder (Whisper's log-mel) and LFCC look only at magnitudes. Vocoders
that rebuild phase (Griffin-Lim, WORLD and most neural vocoders to a lesser degree)
leave its evolution over time less regular than a vocal tract excited by a glottal
source does. For a steady partial, the phase of its STFT bin advances by a constant step
per hop, so the second difference of phase over time ("phase acceleration") is near zero;
its cosine, averaged over a band with the bin powers as weights, measures how regular the
phase is there. A linear time-invariant channel adds a fixed phase per bin, which the
second difference cancels, so a telephone line or microphone colours the weights but not
the measure itself. Like LFCC, no maintained library computes it on batched tensors.

The frame needs enough frequency resolution to separate harmonics: 32 ms Hann frames
(512 samples) every 10 ms. With 20 ms Hamming frames (the LFCC frames) most of the gain
on held-out vocoders went away in leave-one-source-out validation.
"""

from __future__ import annotations

import hashlib

import torch

from spoofwatch.model.encoders.base import EncoderIdentity, TorchEncoder, check_windows
from spoofwatch.model.encoders.lfcc import HOP, N_CEPS, N_FFT, SAMPLE_RATE, LfccEncoder, linear_filterbank

PHASE_BANDS = 20
VERSION = 1


def phase_coherence(
    windows: torch.Tensor, window: torch.Tensor, bands: torch.Tensor, n_fft: int = N_FFT
) -> torch.Tensor:
    """(batch, frames, bands) power-weighted mean cosine of the phase acceleration.

    ``window``: the analysis window, at most ``n_fft`` long (centred in the frame);
    ``bands``: (bands, n_fft // 2 + 1) weights. Frames are those of a non-centred STFT with
    hop HOP; the first and last frame, which have no second difference, repeat their
    neighbours.
    """
    spectrum = torch.stft(
        windows,
        n_fft,
        hop_length=HOP,
        win_length=len(window),
        window=window,
        center=False,
        return_complex=True,
    )
    spectrum = spectrum.transpose(1, 2)  # (batch, frames, bins)
    phase = torch.angle(spectrum)
    accel = phase[:, 2:] - 2 * phase[:, 1:-1] + phase[:, :-2]
    middle = spectrum[:, 1:-1]
    power = middle.real.square() + middle.imag.square()
    weight = torch.einsum("fk,btk->btf", bands, power) + 1e-12
    coherence = torch.einsum("fk,btk->btf", bands, power * torch.cos(accel)) / weight
    return torch.cat([coherence[:, :1], coherence, coherence[:, -1:]], dim=1)


class LfccPhaseEncoder(TorchEncoder):
    """One hidden state of width 80 per frame: the 60 LFCC values and 20 phase-coherence bands."""

    window: torch.Tensor
    bands: torch.Tensor

    def __init__(self, window_s: float = 4.0) -> None:
        super().__init__()
        self.lfcc = LfccEncoder(window_s)  # also checks window_s
        self._window_samples = self.lfcc.window_samples
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("bands", linear_filterbank(PHASE_BANDS, N_FFT, SAMPLE_RATE), persistent=False)
        recipe = f"{self.lfcc.identity.weights_sha256}+phase-v{VERSION}-hann{N_FFT}-{HOP}-{PHASE_BANDS}-power"
        self._identity = EncoderIdentity(
            kind="lfcc-phase",
            name="lfcc-phase",
            weights_sha256=hashlib.sha256(recipe.encode()).hexdigest(),
            sample_rate=SAMPLE_RATE,
            num_hidden_states=1,
            hidden_size=3 * N_CEPS + PHASE_BANDS,
        )

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        (cepstral,) = self.lfcc.hidden_states(windows)
        coherence = phase_coherence(windows.float(), self.window, self.bands)
        return (torch.cat([cepstral, coherence], dim=2),)
