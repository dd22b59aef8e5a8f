"""Leave-one-source-out of the shipped recipe with FARGAN copies of the bona fide clips as
extra training spoofs (`spoofwatch copysynth`), one variant at a time: plain copies, pitch
moved by 10-35 % (two draws; also with only a third of the clips copied, and with the
copies in the clean training channel only); then the per-source EER without and with the
`copysynth` default (pitch 1.1-1.35).

    PYTHONPATH=src python research/vocoder_copies.py --manifest ../shared/corpus/manifest.csv

Copies are made once into --copies (about 25 s per variant with the vocoder from
scripts/build_fargan.sh); features come from the embedding cache.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from copies_grouped import loso_grid
from spectral_blocks import CHANNELS, cached_sets, recipe_extractor

from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.model.resynthesis.vocoder import find_vocoder
from spoofwatch.train.copysynth import PitchShift, write_copies
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.extract import EmbeddingSet

VARIANTS: dict[str, PitchShift | None] = {
    "fargan": None,
    "fargan-ps": PitchShift(1.1, 1.35),
    "fargan-ps-seed1": PitchShift(1.1, 1.35, seed=1),
}
# label: (variants, fraction of the bona fide clips whose copies are used, their channels)
RUNS: dict[str, tuple[tuple[str, ...], float, tuple[str, ...]]] = {
    "no copies (the shipped card)": ((), 1.0, CHANNELS),
    "plain copies": (("fargan",), 1.0, CHANNELS),
    "pitch 1.1-1.35 (copysynth default)": (("fargan-ps",), 1.0, CHANNELS),
    "pitch 1.1-1.35, another draw": (("fargan-ps-seed1",), 1.0, CHANNELS),
    "pitch 1.1-1.35, a third of the clips": (("fargan-ps",), 1 / 3, CHANNELS),
    "pitch 1.1-1.35, clean channel only": (("fargan-ps",), 1.0, ("clean",)),
}


def in_fraction(original_utt_id: str, fraction: float) -> bool:
    digest = hashlib.sha256(original_utt_id.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32 < fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=cache_root() / "copies")
    parser.add_argument("--vocoder")
    args = parser.parse_args()
    items = read_manifest(args.manifest)
    sets = cached_sets(args.manifest, "lfcc-phase")
    extract = recipe_extractor()
    copies = {}
    for name, shift in VARIANTS.items():
        manifest = args.copies / name / "manifest.csv"
        if not manifest.exists():
            write_copies(items, args.copies / name, find_vocoder(args.vocoder), pitch_shift=shift)
        copies[name] = read_manifest(manifest)
    grid: dict[str, tuple[list[EmbeddingSet], list[EmbeddingSet]]] = {}
    for label, (names, fraction, extra_channels) in RUNS.items():
        chosen = {
            name: [c for c in copies[name] if in_fraction(c.extra["copy_of"], fraction)] for name in names
        }
        grid[label] = (
            list(sets.values()),
            [extract(chosen[name], ch) for name in names for ch in extra_channels],
        )
    results = loso_grid(grid, {test: sets[test] for test in CHANNELS}, ())
    base, shipped = "no copies (the shipped card)", "pitch 1.1-1.35 (copysynth default)"
    for test in CHANNELS:
        print(f"per-source EER, {test}: without copies -> with pitch-moved copies")
        after = results[(shipped, test)].per_source_eer
        for source, eer in sorted(results[(base, test)].per_source_eer.items(), key=lambda kv: -kv[1]):
            print(f"  {source:50s} {100 * eer:5.1f} -> {100 * after[source]:5.1f}")


if __name__ == "__main__":
    main()
