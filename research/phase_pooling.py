"""Experiment (README, Accuracy): more statistics of phase and band structure beside the
shipped lfcc-phase block.

Leave-one-source-out with the shipped recipe (Whisper base states 0-4 int8-all, LFCC and
per-band phase coherence pooled as mean and std, windows levelled to -26 dBFS, C 0.001,
spectral weight 2, trained on clean + telephone), then with one more block of 40 features
(weight 2) at a time:
- coherence p10/p90: the 10th and 90th percentile over frames of each band's coherence;
- coherence over 20 ms: the phase's second difference over two hops instead of one;
- coherence over frequency: power-weighted cosine of the phase's second difference across
  neighbouring bins (a smooth group delay), per band;
- band flatness: log of geometric over arithmetic mean power within each band;
- IF deviation: mean |first phase difference - the bin's nominal advance| per band;
and coherence p10/p90 with coherence over frequency. Whisper, LFCC and coherence come from
the embedding cache (`spoofwatch loso ... --spectral lfcc-phase` fills it); the candidate
blocks take about a minute per channel.

    PYTHONPATH=src python research/phase_pooling.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from spectral_blocks import cached_sets, extra_blocks, print_loso

from spoofwatch.model.encoders.lfcc import HOP, N_FFT, linear_filterbank
from spoofwatch.model.encoders.phase import phase_coherence

BANDS = linear_filterbank(20, N_FFT, 16000).double()
WINDOW = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
BINS = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)


def band_mean(weight: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(batch, frames, bins) -> (batch, frames, 20): the weighted mean of value per band."""
    total = torch.einsum("fk,btk->btf", BANDS, weight) + 1e-12
    return torch.einsum("fk,btk->btf", BANDS, weight * value) / total


def mean_std(values: torch.Tensor) -> torch.Tensor:
    return torch.cat([values.mean(1), values.std(1)], dim=1)


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    x = windows.double()
    spectrum = torch.fft.rfft(x.unfold(1, N_FFT, HOP) * WINDOW, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square() + 1e-12
    phase = torch.angle(spectrum)
    shipped = phase_coherence(windows.float(), WINDOW.float(), BANDS.float())[:, 1:-1].double()
    p10, p90 = torch.quantile(shipped, torch.tensor([0.1, 0.9], dtype=shipped.dtype), dim=1)
    lag2 = torch.cos(phase[:, 4:] - 2 * phase[:, 2:-2] + phase[:, :-4])
    across = torch.cos(phase[..., 2:] - 2 * phase[..., 1:-1] + phase[..., :-2])
    pad = torch.nn.functional.pad
    log_geo = torch.einsum("fk,btk->btf", BANDS, torch.log(power)) / BANDS.sum(1)
    arith = torch.einsum("fk,btk->btf", BANDS, power) / BANDS.sum(1)
    advance = phase[:, 1:] - phase[:, :-1] - 2 * torch.pi * BINS * HOP / N_FFT
    deviation = (torch.remainder(advance + torch.pi, 2 * torch.pi) - torch.pi).abs()
    return {
        "coherence p10/p90": torch.cat([p10, p90], dim=1),
        "coherence over 20 ms": mean_std(band_mean(power[:, 2:-2], lag2)),
        "coherence over frequency": mean_std(band_mean(pad(power[..., 1:-1], (1, 1)), pad(across, (1, 1)))),
        "band flatness": mean_std(log_geo - torch.log(arith)),
        "IF deviation": mean_std(band_mean(power[:, 1:], deviation)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    sets = cached_sets(args.manifest, "lfcc-phase")
    extra = {ch: extra_blocks(s, ch, candidates) for ch, s in sets.items()}

    def run(label: str, names: list[str]) -> None:
        print_loso(label, sets, {ch: [extra[ch][n] for n in names] for ch in sets})

    run("shipped lfcc-phase", [])
    for name in extra["clean"]:
        run(f"+ {name}", [name])
    run("+ coherence p10/p90 + coherence over frequency", ["coherence p10/p90", "coherence over frequency"])


if __name__ == "__main__":
    main()
