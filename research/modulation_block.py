"""Experiment (README, Accuracy): the modulation spectrum of each band's log energy beside
the shipped features. A generator shapes how band energies move in time: an acoustic
model's over-smoothing takes power out of fast modulations (syllables move at 4-8 Hz,
phone transitions faster), and a vocoder that works in frames of a fixed hop can leave
power at that frame rate (62.5 Hz for a 256-sample hop at 16 kHz, 86 Hz at 22.05 kHz,
94 Hz at 24 kHz). Each levelled window's power spectrum over 16 ms Hann frames every 5 ms
is summed into 16 linear bands (500 Hz each); each band's log energy over the window, less
its mean, goes through an FFT over time, and its power is summed into six modulation bins
(1-4, 4-8, 8-16, 16-32, 32-64 and 64-100 Hz), each a share of the band's total, as a
logarithm. A fixed linear channel adds a constant to each band's log energy, which the mean
removes, and level adds one to every band, so neither the handset's coloration nor the
caller's level enters. Two blocks beside the shipped spectral block under the shipped recipe
(FARGAN copies through the clean channel, clean + telephone + augmented training, Asterisk
sources as one fold):
- the 96 modulation shares;
- those averaged over the 16 bands (6).

    PYTHONPATH=src python research/modulation_block.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import itertools

import torch
from copies_grouped import block_variants, compare_variants, recipe_parser, shipped_blocks

VERSION = 1
SAMPLE_RATE = 16000
FRAME = 256  # 16 ms
HOP = 80  # 5 ms: modulations up to 100 Hz
BANDS = 16
EDGES_HZ = (1.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)


def band_log_energy(windows: torch.Tensor) -> torch.Tensor:
    """(windows, bands, frames): each linear band's log power per frame."""
    spectrum = torch.stft(
        windows.float(), FRAME, HOP, window=torch.hann_window(FRAME), return_complex=True, center=False
    )
    power = spectrum.abs().square()[:, 1:, :]  # drop DC: 128 bins, 62.5 Hz each
    bands = power.reshape(power.shape[0], BANDS, -1, power.shape[-1]).sum(2)
    return torch.log(bands + 1e-10)


def modulation_shares(windows: torch.Tensor) -> torch.Tensor:
    """(windows, bands, bins): log share of each band's modulation power in each bin."""
    energy = band_log_energy(windows)
    energy = energy - energy.mean(-1, keepdim=True)
    frames = energy.shape[-1]
    power = torch.fft.rfft(energy * torch.hann_window(frames, periodic=False), dim=-1).abs().square()
    freqs = torch.fft.rfftfreq(frames, d=HOP / SAMPLE_RATE)
    total = power[..., freqs >= EDGES_HZ[0]].sum(-1, keepdim=True) + 1e-10
    bins = [
        power[..., (freqs >= lo) & (freqs < hi)].sum(-1, keepdim=True)
        for lo, hi in itertools.pairwise(EDGES_HZ)
    ]
    return torch.log(torch.cat(bins, -1) / total + 1e-8)


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    shares = modulation_shares(windows)
    return {"per band": shares.flatten(1), "band average": shares.mean(1)}


def main() -> None:
    torch.set_num_threads(1)
    args = recipe_parser(__doc__).parse_args()
    found = shipped_blocks(args.manifest, args.copies, f"modulation-v{VERSION}", candidates)
    chosen = {"shipped": [], **{f"+ modulation, {n}": [n] for n in ("per band", "band average")}}
    compare_variants(block_variants(*found, chosen))


if __name__ == "__main__":
    main()
