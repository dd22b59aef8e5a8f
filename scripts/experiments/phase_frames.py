"""Experiment (README, Accuracy): the phase-coherence block's analysis frame.

Leave-one-source-out (the shipped recipe: Whisper base states 0-4 int8-all + LFCC, windows
levelled to -26 dBFS, C 0.001, spectral block weight 2, trained on clean + telephone) with
the per-band phase-acceleration coherence of model/encoders/phase.py computed over 20 ms
Hamming frames (the LFCC frames), 32 ms Hann frames (shipped) and 64 ms Hann frames, and
without it. The Whisper (int8-all) and LFCC features come from the embedding cache (`spoofwatch loso
... --spectral lfcc` fills it); the coherence takes about a minute per channel and variant.

    PYTHONPATH=src python scripts/experiments/phase_frames.py --manifest ../shared/corpus/manifest.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spoofwatch.model.encoders.lfcc import linear_filterbank
from spoofwatch.model.encoders.phase import phase_coherence
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.level import normalise_level
from spoofwatch.model.pooling import mean_std_pool
from spoofwatch.stream.audiofile import load_audio
from spoofwatch.stream.windowing import WindowConfig, cut_windows
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.validate import leave_one_source_out

LEVEL_DBFS = -26.0


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


def variant_features(base: EmbeddingSet, channel: str) -> dict[str, np.ndarray]:
    transform = get_channel(channel)
    config = WindowConfig(16000, 4.0, 2.0)
    out: dict[str, list[np.ndarray]] = {name: [] for name in VARIANTS}
    with torch.inference_mode():
        for i, item in enumerate(base.items):
            if not (base.item_index == i).any():
                continue
            samples = transform(load_audio(item.path, 16000).samples, 16000)
            windows = torch.from_numpy(np.stack([w.samples for w in cut_windows(samples, config)]))
            windows = normalise_level(windows, 16000, LEVEL_DBFS)
            for name, fn in VARIANTS.items():
                out[name].append(fn(windows).numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    items = read_manifest(args.manifest)
    spec = EncoderSpec("whisper-ct2", "whisper-base")
    _, _, whisper = feature_encoder(spec, 4.0, [0, 1, 2, 3, 4], "int8-all")
    lfcc = build_encoder(EncoderSpec("lfcc", "lfcc"), 4.0)
    window = WindowConfig(16000, 4.0, 2.0)
    sets = {
        ch: extract_with_spectral(items, whisper, lfcc, window, channel=ch, level_dbfs=LEVEL_DBFS)
        for ch in ("clean", "telephone")
    }
    extra = {ch: variant_features(sets[ch], ch) for ch in sets}
    layers = [0, 1, 2, 3, 4]

    def run(name: str, with_block: Callable[[EmbeddingSet, str], EmbeddingSet]) -> None:
        chosen = {ch: with_block(s, ch) for ch, s in sets.items()}
        eers = []
        for test in ("clean", "telephone"):
            result = leave_one_source_out(
                list(chosen.values()), chosen[test], layers, C=0.001, spectral_weight=2.0,
                test_channel=test, progress=False,
            )
            eers.append(100 * result.metrics.eer)
        print(f"{name:32s} LOSO clean {eers[0]:5.2f} %  telephone {eers[1]:5.2f} %", flush=True)

    run("LFCC only", lambda s, ch: s)
    for name in VARIANTS:
        run(
            f"LFCC + coherence, {name}",
            lambda s, ch, name=name: replace(  # type: ignore[misc]
                s, spectral=np.concatenate([s.spectral, extra[ch][name]], axis=1)
            ),
        )


if __name__ == "__main__":
    main()
