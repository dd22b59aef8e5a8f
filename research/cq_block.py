"""Experiment (README, Accuracy): constant-Q cepstral statistics (CQCC-like, Todisco et al.,
Odyssey 2016) beside the shipped spectral block, leave-one-source-out on the shipped recipe.

The shipped recipe (Whisper base states 0-4 int8-all, LFCC and phase coherence, levelled
windows, C 0.001, spectral weight 2, trained on the clean, telephone and augmented
channels plus the FARGAN copies through the clean one; the Asterisk sources as one fold),
then with one more block (weight 2) appended to the spectral features:
- CQCC: a constant-Q transform (48 bins per octave from 31.25 Hz to 8 kHz, Hann kernels in
  frequency, each bin's power averaged over 10 ms frames), log power, a DCT over the bins
  to 20 coefficients with deltas and double deltas, mean and std over the window (120);
- CQCC, uniform: the same log power resampled onto a linear frequency grid first (as
  Todisco's CQCC does) before the DCT (120).
The constant-Q resolution is what LFCC lacks: harmonics resolved at low frequencies, short
frames at high ones. The CQT is computed on the whole 4 s window in the frequency domain:
one rfft, then each bin's kernel-weighted FFT bins are moved to baseband and inverse
transformed at the lowest rate that holds them (a multiple of the 100 frames per second).

    PYTHONPATH=src python research/cq_block.py --manifest ../shared/corpus/manifest.csv

About 25 minutes on 2 cores: the blocks are computed once per channel into the experiment
cache (about 2 minutes with the channels' transforms); Whisper, LFCC and phase features
come from the embedding cache.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from copies_grouped import block_variants, compare_variants, recipe_parser, shipped_blocks

from spoofwatch.model.encoders.lfcc import dct_matrix, deltas

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 64000
FRAMES = 400  # 10 ms frames in 4 s
BINS_PER_OCTAVE = 48
F_MIN = 31.25
OCTAVES = 8
N_CEPS = 20
UNIFORM_POINTS = 1024
VERSION = 1


class ConstantQ:
    """Power of a constant-Q transform of (batch, 64000) windows in (batch, 400, bins)."""

    def __init__(self) -> None:
        n_bins = BINS_PER_OCTAVE * OCTAVES
        self.freqs = F_MIN * 2.0 ** (np.arange(n_bins) / BINS_PER_OCTAVE)
        q = 1.0 / (2.0 ** (1.0 / BINS_PER_OCTAVE) - 1.0)
        spacing = SAMPLE_RATE / WINDOW_SAMPLES  # Hz per rfft bin
        n_rfft = WINDOW_SAMPLES // 2 + 1
        # bins grouped by their baseband length: one gather and one ifft per group
        groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for k, f in enumerate(self.freqs):
            half = f / q  # the Hann kernel spans f +- bandwidth
            lo = max(1, math.ceil((f - half) / spacing))
            hi = min(n_rfft - 1, math.floor((f + half) / spacing))
            idx = np.arange(lo, hi + 1)
            weight = 0.5 + 0.5 * np.cos(np.pi * (idx * spacing - f) / half)
            weight /= weight.sum()
            length = FRAMES * math.ceil(len(idx) / FRAMES)
            groups.setdefault(length, []).append((k, idx, weight))
        self.n_bins = n_bins
        self.groups = []
        for length, members in sorted(groups.items()):
            index = np.zeros((len(members), length), dtype=np.int64)
            weight = np.zeros((len(members), length))
            for row, (_, idx, w) in enumerate(members):
                index[row, : len(idx)] = idx
                weight[row, : len(idx)] = w
            order = torch.tensor([k for k, _, _ in members])
            self.groups.append((order, torch.from_numpy(index), torch.from_numpy(weight)))

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(windows.double(), dim=1)
        power = torch.zeros(windows.shape[0], FRAMES, self.n_bins, dtype=torch.float64)
        for order, index, weight in self.groups:
            band = spectrum[:, index] * weight  # (batch, bins, baseband length)
            sub = torch.fft.ifft(band, dim=2)
            energy = (sub.real.square() + sub.imag.square()).reshape(len(windows), len(order), FRAMES, -1)
            power[:, :, order] = energy.mean(3).transpose(1, 2)
        return power


def uniform_dct(freqs: np.ndarray) -> torch.Tensor:
    """(bins, N_CEPS): linear interpolation of the geometric bins onto a uniform grid, then DCT."""
    grid = np.linspace(freqs[0], freqs[-1], UNIFORM_POINTS)
    interp = np.zeros((len(freqs), UNIFORM_POINTS))
    pos = np.interp(grid, freqs, np.arange(len(freqs)))
    lower = np.floor(pos).astype(int).clip(0, len(freqs) - 2)
    frac = pos - lower
    interp[lower, np.arange(UNIFORM_POINTS)] = 1 - frac
    interp[lower + 1, np.arange(UNIFORM_POINTS)] += frac
    return torch.from_numpy(interp) @ dct_matrix(N_CEPS, UNIFORM_POINTS).double()


CQT = ConstantQ()
DCT_GEOMETRIC = dct_matrix(N_CEPS, CQT.n_bins).double()
DCT_UNIFORM = uniform_dct(CQT.freqs)


def pooled_cepstra(log_power: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    cepstra = log_power @ basis
    d1 = deltas(cepstra)
    frames = torch.cat([cepstra, d1, deltas(d1)], dim=2)
    return torch.cat([frames.mean(1), frames.std(1)], dim=1)


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    log_power = torch.log(CQT(windows) + 1e-10)
    return {
        "cqcc": pooled_cepstra(log_power, DCT_GEOMETRIC),
        "cqcc-uniform": pooled_cepstra(log_power, DCT_UNIFORM),
    }


def main() -> None:
    args = recipe_parser(__doc__).parse_args()
    found = shipped_blocks(args.manifest, args.copies, f"cq-v{VERSION}", candidates)
    chosen = {"shipped": [], "+ cqcc": ["cqcc"], "+ cqcc uniform": ["cqcc-uniform"]}
    compare_variants(block_variants(*found, chosen))


if __name__ == "__main__":
    main()
