"""The shipped recipe (FARGAN copies through the clean channel) with and without a third,
randomly augmented training channel for both classes (codecs, noise, reverb, gain, packet
loss), under the Asterisk fold grouping: pooled EER on the clean, telephone and augmented
test channels, per-source EER, each fold's bona fide EER, and the gain over 1,000 draws of
the folds with replacement.

    PYTHONPATH=src python research/augmented_channel.py --manifest ../shared/corpus/manifest.csv

Needs the copies (`spoofwatch copysynth --out C`, default in the cache as made by
scripts/train_default.sh); features come from the embedding cache. About 15 minutes on 2
cores with the cache filled.
"""

from __future__ import annotations

from copies_grouped import (
    ASTERISK_AS_ONE,
    SHIPPED_CHANNELS,
    compare_training_channels,
    recipe_parser,
    shipped_sets,
)
from spectral_blocks import CHANNELS


def main() -> None:
    args = recipe_parser(__doc__).parse_args()
    sets, copies = shipped_sets(args.manifest, args.copies)
    runs = {"clean + telephone": CHANNELS, "clean + telephone + augmented (shipped)": SHIPPED_CHANNELS}
    compare_training_channels(sets, copies, runs, SHIPPED_CHANNELS, ASTERISK_AS_ONE)


if __name__ == "__main__":
    main()
