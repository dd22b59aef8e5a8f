"""Experiment (README, Accuracy): how many linear bands the phase-coherence block averages
over, on the shipped recipe (FARGAN copies through the clean channel, clean + telephone +
augmented training, Asterisk sources as one fold).

The shipped block pools the power-weighted phase-acceleration coherence of 32 ms Hann
frames over 20 linear bands (400 Hz each; mean and std: 40 features). Each variant replaces
those 40 columns of the spectral block with the same statistic over 10 bands (800 Hz, 20
features) or 40 bands (200 Hz, 80 features); the 20-band block is recomputed here too and
checked against the cached shipped columns (same windows, same levelling).

    PYTHONPATH=src python research/phase_bands.py --manifest ../shared/corpus/manifest.csv

About 25 minutes on 2 cores with the shipped channels' embeddings cached (the blocks take
about 3 minutes, kept in the experiment cache).
"""

from __future__ import annotations

import numpy as np
import torch
from copies_grouped import block_variants, compare_variants, recipe_parser, shipped_blocks

from spoofwatch.model.encoders.lfcc import N_FFT, SAMPLE_RATE, linear_filterbank
from spoofwatch.model.encoders.phase import phase_coherence
from spoofwatch.model.pooling import mean_std_pool
from spoofwatch.model.resynthesis.encoder import PHASE_COLUMNS

BAND_COUNTS = (10, 20, 40)
WINDOW = torch.hann_window(N_FFT, periodic=True)
BANDS = {n: linear_filterbank(n, N_FFT, SAMPLE_RATE) for n in BAND_COUNTS}
VERSION = 1


def candidates(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for n, bands in BANDS.items():
        out[f"{n} bands"] = mean_std_pool((phase_coherence(windows.float(), WINDOW, bands),), [0])
    return out


def main() -> None:
    args = recipe_parser(__doc__).parse_args()
    found = shipped_blocks(args.manifest, args.copies, f"phase-bands-v{VERSION}", candidates)
    sets, _, extra, _ = found
    for ch, s in sets.items():
        assert s.spectral is not None
        gap = np.abs(extra[ch]["20 bands"] - s.spectral[:, PHASE_COLUMNS]).max()
        print(f"{ch}: recomputed 20-band block against the cached shipped columns, max |diff| {gap:.2e}")
    chosen = {"shipped (20 bands)": [], **{f"{n} bands instead": [f"{n} bands"] for n in (10, 40)}}
    compare_variants(block_variants(*found, chosen, drop=PHASE_COLUMNS))


if __name__ == "__main__":
    main()
