"""Experiment (README, Accuracy): the phase-coherence block's analysis frame.

Leave-one-source-out (the shipped recipe: Whisper base states 0-4 int8-all + LFCC, windows
levelled to -26 dBFS, C 0.001, spectral block weight 2, trained on clean + telephone) with
the per-band phase-acceleration coherence of model/encoders/phase.py computed over 20 ms
Hamming frames (the LFCC frames), 32 ms Hann frames (shipped) and 64 ms Hann frames, and
without it. The Whisper (int8-all) and LFCC features come from the embedding cache (`spoofwatch loso
... --spectral lfcc` fills it); the coherence takes about a minute per channel and variant.

    PYTHONPATH=src python research/phase_frames.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from spectral_blocks import cached_sets, extra_blocks, print_loso

from spoofwatch.model.encoders.lfcc import linear_filterbank
from spoofwatch.model.encoders.phase import phase_coherence
from spoofwatch.model.pooling import mean_std_pool


def coherence(windows: torch.Tensor, n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """Pooled (mean, std) per-band coherence, 20 bands, over the frames that have a second
    difference (model.encoders.phase repeats the edge frames; dropped here)."""
    band = phase_coherence(windows, window, linear_filterbank(20, n_fft, 16000), n_fft)[:, 1:-1]
    return mean_std_pool((band,), [0])


VARIANTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "20 ms Hamming (LFCC frames)": lambda x: coherence(x, 512, torch.hamming_window(320, periodic=False)),
    "32 ms Hann (shipped)": lambda x: coherence(x, 512, torch.hann_window(512)),
    "64 ms Hann": lambda x: coherence(x, 1024, torch.hann_window(1024)),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    sets = cached_sets(args.manifest, "lfcc")
    extra = {
        ch: extra_blocks(s, ch, lambda x: {name: fn(x) for name, fn in VARIANTS.items()})
        for ch, s in sets.items()
    }
    print_loso("LFCC only", sets, {ch: [] for ch in sets})
    for name in VARIANTS:
        print_loso(f"LFCC + coherence, {name}", sets, {ch: [extra[ch][name]] for ch in sets})


if __name__ == "__main__":
    main()
