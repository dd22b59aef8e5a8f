"""The shipped recipe (FARGAN copies through the clean channel) with and without a third,
randomly augmented training channel for both classes (codecs, noise, reverb, gain, packet
loss), under the Asterisk fold grouping: pooled EER on the clean, telephone and augmented
test channels, per-source EER, each fold's bona fide EER, and the gain over 1,000 draws of
the folds with replacement.

    PYTHONPATH=src python scripts/experiments/augmented_channel.py --manifest ../shared/corpus/manifest.csv

Needs the copies (`spoofwatch copysynth --out C`, default in the cache as made by
scripts/train_default.sh); features come from the embedding cache. About 15 minutes on 2
cores with the cache filled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from copies_grouped import compare_training_channels
from spectral_blocks import CHANNELS, cached_sets, recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.corpus import read_manifest

GROUPS = ["debian:asterisk*"]
TESTS = (*CHANNELS, "augmented")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=cache_root() / "copies" / "fargan-ps" / "manifest.csv")
    args = parser.parse_args()
    sets = dict(cached_sets(args.manifest, "lfcc-phase"))
    extract = recipe_extractor()
    sets["augmented"] = extract(sets["clean"].items, "augmented")
    copies = extract(read_manifest(args.copies), "clean")
    runs = {"clean + telephone": CHANNELS, "clean + telephone + augmented (shipped)": TESTS}
    compare_training_channels(sets, copies, runs, TESTS, GROUPS)


if __name__ == "__main__":
    main()
