"""The Whisper states the head reads, re-checked on the shipped recipe (phase block, FARGAN
copies through the clean channel, clean + telephone + augmented training; Asterisk sources
as one fold). States 0-4 were chosen before the phase block, the copies and the augmented
channel joined; a shallower set would also run fewer encoder layers per window. Subsets of
0-4 come from the same cached features, so nothing is extracted again.

    PYTHONPATH=src python research/layer_subsets.py --manifest ../shared/corpus/manifest.csv

About 25 minutes on 2 cores with the shipped channels' embeddings cached. Result (2026-11-27):
states 0-4 kept; 1-4 is 0.5 points better on both channels, inside fold noise (README).
"""

from __future__ import annotations

from copies_grouped import compare_variants, recipe_parser, shipped_sets

# the shipped states first: every other subset is compared with it
SUBSETS = ("0,1,2,3,4", "0,1,2,3", "0,1,2", "1,2,3,4", "0,2,4")


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--tests", default="clean,telephone", help="comma-separated test channels")
    args = parser.parse_args()
    tests = args.tests.split(",")
    sets, copies = shipped_sets(args.manifest, args.copies)
    layers = {f"states {subset}": [int(n) for n in subset.split(",")] for subset in SUBSETS}
    compare_variants(dict.fromkeys(layers, (sets, copies)), tests, layers)


if __name__ == "__main__":
    main()
