"""Kokoro-82M text-to-speech spoofs (``kokoro_spoofs.py``) as extra training spoofs beside the
shipped recipe (clean, telephone and augmented training channels, the FARGAN copies through
the clean channel), under the Asterisk grouping: the shipped recipe / plus the Kokoro clips
through the clean channel / through all three training channels. The Kokoro clips' source
is none of the corpus's, so every fold trains on them and none scores them. StyleTTS 2,
whose acoustic model Kokoro shares, is one of the held-out sources: the per-source table
shows how much of any gain is that fold.

    PYTHONPATH=src python research/kokoro_extra.py --manifest ../shared/corpus/manifest.csv \\
        --kokoro ~/.cache/spoofwatch/extras/kokoro/manifest.csv

About 25 minutes on 2 cores with the corpus's embeddings cached (the Kokoro clips' three
channels are extracted once, into the cache).
"""

from __future__ import annotations

from pathlib import Path

from copies_grouped import (
    ASTERISK_AS_ONE,
    SHIPPED_CHANNELS,
    compare_to_first,
    loso_grid,
    recipe_parser,
    shipped_sets,
)
from spectral_blocks import recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet

DEFAULT_KOKORO = cache_root() / "extras" / "kokoro" / "manifest.csv"


def shipped_with_kokoro(
    doc: str | None,
) -> tuple[dict[str, EmbeddingSet], EmbeddingSet, dict[str, EmbeddingSet]]:
    """Command line (``recipe_parser`` and ``--kokoro``; ``doc`` its help): the shipped sets,
    the copies, and the Kokoro clips' features through each shipped training channel."""
    parser = recipe_parser(doc)
    parser.add_argument("--kokoro", type=Path, default=DEFAULT_KOKORO)
    args = parser.parse_args()
    sets, copies = shipped_sets(args.manifest, args.copies)
    extract = recipe_extractor()
    kokoro_items = read_manifest(args.kokoro)
    return sets, copies, {channel: extract(kokoro_items, channel) for channel in SHIPPED_CHANNELS}


def main() -> None:
    sets, copies, kokoro = shipped_with_kokoro(__doc__)
    train = [sets[channel] for channel in SHIPPED_CHANNELS]
    runs = {
        "shipped": (train, [copies]),
        "+ Kokoro, clean": (train, [copies, kokoro["clean"]]),
        "+ Kokoro, three channels": (train, [copies, *kokoro.values()]),
    }
    tests = {test: sets[test] for test in SHIPPED_CHANNELS}
    results = loso_grid(runs, tests, ASTERISK_AS_ONE)
    compare_to_first(results, list(runs), list(SHIPPED_CHANNELS), ASTERISK_AS_ONE)


if __name__ == "__main__":
    main()
