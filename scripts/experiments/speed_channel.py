"""Speed perturbation (Ko et al., Interspeech 2015: the clip resampled as if played 10 %
slower or faster, so tempo, pitch and formants move together) as a fourth training channel
beside the shipped card's clean, telephone and augmented ones, both classes alike, the
factor (0.9 or 1.1) drawn per clip from its samples. For the spoofs it also moves a
vocoder's artefacts (upsampling tones, frame-rate periodicity) to other frequencies, so the
head cannot tie them to the exact frequencies of the training generators; for the bona fide
clips it adds voices. Leave-one-source-out under the Asterisk grouping on the clean,
telephone and augmented test channels, with the fold bootstrap against the shipped recipe.

    PYTHONPATH=src python scripts/experiments/speed_channel.py --manifest ../shared/corpus/manifest.csv

About 20 minutes on 2 cores with the shipped channels' embeddings cached. Result (2026-11-27): not
adopted (clean 17.40 -> 18.16 %, telephone 19.34 -> 18.70 %, augmented 25.33 -> 26.34 %; README).
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
from copies_grouped import compare_training_channels
from numpy.typing import NDArray
from scipy.signal import resample_poly
from spectral_blocks import CHANNELS, cached_sets, recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.channel import CHANNELS as CHANNEL_REGISTRY
from spoofwatch.train.corpus import read_manifest

GROUPS = ["debian:asterisk*"]
SHIPPED = (*CHANNELS, "augmented")
# (up, down) of the polyphase resampler: 10/9 plays the clip 10 % slower, 10/11 10 % faster.
FACTORS = ((10, 9), (10, 11))


def speed_perturb(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(samples).tobytes()) ^ 0x53504544)
    up, down = FACTORS[int(rng.integers(len(FACTORS)))]
    y = resample_poly(samples.astype(np.float64), up, down)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=cache_root() / "copies" / "fargan-ps" / "manifest.csv")
    args = parser.parse_args()
    CHANNEL_REGISTRY["speed"] = speed_perturb  # an experiment-only channel name in the embedding cache
    sets = cached_sets(args.manifest, "lfcc-phase")
    extract = recipe_extractor()
    sets["augmented"] = extract(sets["clean"].items, "augmented")
    sets["speed"] = extract(sets["clean"].items, "speed")
    copies = extract(read_manifest(args.copies), "clean")
    runs = {"shipped (clean, telephone, augmented)": SHIPPED, "shipped + speed": (*SHIPPED, "speed")}
    compare_training_channels(sets, copies, runs, SHIPPED, GROUPS)


if __name__ == "__main__":
    main()
