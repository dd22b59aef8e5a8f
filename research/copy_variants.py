"""FARGAN copies that differ from their originals in more than pitch, as extra training
spoofs in place of the shipped pitch-moved copies: the spectral envelope warped in
frequency (a vocal-tract-length change, as voice conversion makes) and/or the features
smoothed in time (the over-smoothed trajectories of a TTS acoustic model), each on top of
the shipped pitch move. Leave-one-source-out under the Asterisk grouping (training on the
clean and telephone channels, copies on the clean one), clean and telephone, and the
fold bootstrap of each variant against the shipped copies.

    PYTHONPATH=src python research/copy_variants.py \
        --manifest ../shared/corpus/manifest.csv

Writes the copies to the cache (``copies/fargan-ps-<variant>``); features come from the
embedding cache. About 30 minutes on 2 cores the first time. Result (2026-11-26): every
variant is worse than the shipped copies (README, selection table).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from copies_grouped import compare_to_first, loso_grid
from numpy.typing import NDArray
from scipy.fft import dct, idct
from spectral_blocks import CHANNELS, cached_sets, recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.resynthesis.vocoder import FeatureEdit, find_vocoder
from spoofwatch.train.copysynth import write_copies
from spoofwatch.train.corpus import LabelledItem, read_manifest

GROUPS = ["debian:asterisk*"]
NB_BANDS = 18
# Opus dnn/freq.c eband5ms: band edges in 200 Hz units; the cepstrum is an orthonormal DCT-II
# of the bands' log10 energies (dnn/freq.c dct, dct_table).
BAND_HZ = 200.0 * np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 34, 40], dtype=np.float64)


def draw(utt_id: str, salt: str, low: float, high: float) -> float:
    digest = hashlib.sha256(f"{utt_id}#{salt}".encode()).digest()
    return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).uniform(low, high))


def warp_envelope(frames: NDArray[np.float32], alpha: float) -> NDArray[np.float32]:
    """Move the spectral envelope up (alpha > 1) or down in frequency by ``alpha``."""
    log_bands = idct(frames[:, :NB_BANDS].astype(np.float64), type=2, norm="ortho", axis=1)
    source_hz = BAND_HZ / alpha
    warped = np.stack([np.interp(source_hz, BAND_HZ, row) for row in log_bands])
    out = frames.copy()
    out[:, :NB_BANDS] = dct(warped, type=2, norm="ortho", axis=1)
    return out


def smooth_in_time(frames: NDArray[np.float32], width: int) -> NDArray[np.float32]:
    """A centred Hann moving average of the cepstra and pitch over ``width`` frames."""
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    out = frames.copy()
    pad = width // 2
    for k in range(NB_BANDS + 1):
        padded = np.pad(frames[:, k].astype(np.float64), pad, mode="edge")
        out[:, k] = np.convolve(padded, kernel, mode="valid")
    return out


def variant_edit(name: str, utt_id: str, pitch_factor: float) -> FeatureEdit:
    # A higher voice usually comes with a shorter vocal tract: warp the same way as the pitch.
    alpha = draw(utt_id, "warp", 1.05, 1.18)
    alpha = alpha if pitch_factor > 1.0 else 1.0 / alpha

    def edit(frames: NDArray[np.float32]) -> NDArray[np.float32]:
        if "warp" in name:
            frames = warp_envelope(frames, alpha)
        if "smooth" in name:
            frames = smooth_in_time(frames, 5)
        return frames

    return edit


def make_copies(items: list[LabelledItem], name: str, out_dir: Path) -> Path:
    """The pitch-moved copies with the ``name`` edit (``warp``, ``smooth``, ``warp-smooth``)."""
    manifest = out_dir / "manifest.csv"
    if manifest.is_file():
        return manifest
    variant = (name, lambda item, factor: variant_edit(name, item.utt_id, factor))
    return write_copies(items, out_dir, find_vocoder(), variant=variant, workers=2).manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--variants", default="warp,smooth,warp-smooth")
    args = parser.parse_args()
    items = read_manifest(args.manifest)
    sets = cached_sets(args.manifest, "lfcc-phase")
    extract = recipe_extractor()
    copies = {
        "ps (shipped)": extract(
            read_manifest(cache_root() / "copies" / "fargan-ps" / "manifest.csv"), "clean"
        )
    }
    for name in args.variants.split(","):
        manifest = make_copies(items, name, cache_root() / "copies" / f"fargan-ps-{name}")
        copies[name] = extract(read_manifest(manifest), "clean")
    grid = {name: ([sets[ch] for ch in CHANNELS], [extra]) for name, extra in copies.items()}
    results = loso_grid(grid, {test: sets[test] for test in CHANNELS}, GROUPS)
    compare_to_first(results, list(copies), CHANNELS, GROUPS)


if __name__ == "__main__":
    main()
