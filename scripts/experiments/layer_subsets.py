"""The Whisper states the head reads, re-checked on the shipped recipe (phase block, FARGAN
copies through the clean channel, clean + telephone + augmented training; Asterisk sources
as one fold). States 0-4 were chosen before the phase block, the copies and the augmented
channel joined; a shallower set would also run fewer encoder layers per window. Subsets of
0-4 come from the same cached features, so nothing is extracted again.

    PYTHONPATH=src python scripts/experiments/layer_subsets.py --manifest ../shared/corpus/manifest.csv

About 25 minutes on 2 cores with the shipped channels' embeddings cached. Result (2026-11-27):
states 0-4 kept; 1-4 is 0.5 points better on both channels, inside fold noise (README).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from copies_grouped import print_comparison, recipe_loso
from spectral_blocks import CHANNELS, LAYERS, cached_sets, recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.validate import fold_key

GROUPS = ["debian:asterisk*"]
TRAIN_CHANNELS = (*CHANNELS, "augmented")
SUBSETS = ("0,1,2,3,4", "0,1,2,3", "0,1,2", "1,2,3,4", "0,2,4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=cache_root() / "copies" / "fargan-ps" / "manifest.csv")
    parser.add_argument("--tests", default="clean,telephone", help="comma-separated test channels")
    args = parser.parse_args()
    tests = args.tests.split(",")
    sets = dict(cached_sets(args.manifest, "lfcc-phase"))
    extract = recipe_extractor()
    sets["augmented"] = extract(sets["clean"].items, "augmented")
    copies = extract(read_manifest(args.copies), "clean")
    train = [sets[ch] for ch in TRAIN_CHANNELS]
    results = {}
    for subset in SUBSETS:
        layers = [int(n) for n in subset.split(",")]
        cells = []
        for test in tests:
            result = recipe_loso(train, sets[test], test, [copies], GROUPS, layers)
            results[(subset, test)] = result
            cells.append(f"{test} EER {100 * result.metrics.eer:5.2f} % minDCF {result.metrics.min_dcf:.3f}")
        print(f"states {subset:10s} " + "  ".join(cells), flush=True)
    folds = np.array([fold_key(it, GROUPS) for it in sets["clean"].items])
    shipped = ",".join(str(n) for n in LAYERS)
    for subset in SUBSETS[1:]:
        for test in tests:
            before, after = results[(shipped, test)], results[(subset, test)]
            print_comparison(f"states {subset}, {test}", before, after, folds)


if __name__ == "__main__":
    main()
