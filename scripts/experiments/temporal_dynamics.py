"""Temporal dynamics of the Whisper states beside their mean and std: for each state the
absolute frame-to-frame change |h[t+1] - h[t]| (20 ms frames), pooled by its mean and std
over the window, added to the shipped recipe's features (Asterisk sources as one fold,
three training channels, FARGAN copies through the clean channel). Synthetic speech is
often smoother or more regular over time than a recording (a TTS acoustic model's
over-smoothing, a vocoder's frame-rate periodicity); the shipped mean+std pooling cannot
see order in time at all.

    PYTHONPATH=src python scripts/experiments/temporal_dynamics.py --manifest ../shared/corpus/manifest.csv

Needs the copies (`spoofwatch copysynth --out C`, default in the cache as made by
scripts/train_default.sh). The states with their changes are cached as an encoder of their
own (name ``whisper-base+absdelta``, twice the hidden states); about 6 minutes per channel
to extract on 2 cores, then about 5 minutes per leave-one-source-out run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from copies_grouped import print_comparison, recipe_loso
from spectral_blocks import LAYERS, LEVEL_DBFS, WINDOW

from spoofwatch.model.encoders.base import Encoder, EncoderIdentity
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.encoders.weights import cache_root
from spoofwatch.train.corpus import LabelledItem, read_manifest
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.pipeline import feature_encoder
from spoofwatch.train.validate import fold_key

GROUPS = ["debian:asterisk*"]
TRAIN_CHANNELS = ("clean", "telephone", "augmented")
TESTS = ("clean", "telephone", "augmented")


class WithAbsDelta:
    """``inner``'s hidden states, then |h[t+1] - h[t]| of each (so state n + i is the change of state i)."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        ident = inner.identity
        self._identity = replace(
            ident, name=f"{ident.name}+absdelta", num_hidden_states=2 * ident.num_hidden_states
        )

    @property
    def identity(self) -> EncoderIdentity:
        return self._identity

    @property
    def window_samples(self) -> int:
        return self.inner.window_samples

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = self.inner.hidden_states(windows)
        return (*states, *((s[:, 1:] - s[:, :-1]).abs() for s in states))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--copies", type=Path, default=cache_root() / "copies" / "fargan-ps" / "manifest.csv")
    args = parser.parse_args()
    _, _, whisper = feature_encoder(EncoderSpec("whisper-ct2", "whisper-base"), 4.0, LAYERS, "int8-all")
    encoder = WithAbsDelta(whisper)
    spectral = build_encoder(EncoderSpec("lfcc-phase", "lfcc-phase"), 4.0)
    items = read_manifest(args.manifest)

    def extract(its: Sequence[LabelledItem], channel: str) -> EmbeddingSet:
        return extract_with_spectral(its, encoder, spectral, WINDOW, channel=channel, level_dbfs=LEVEL_DBFS)

    sets = {ch: extract(items, ch) for ch in TRAIN_CHANNELS}
    copies = extract(read_manifest(args.copies), "clean")
    n = whisper.identity.num_hidden_states
    delta = [n + layer for layer in LAYERS]
    # title: Whisper states (and their changes) the head sees; the spectral block is always in
    layer_sets = {
        "states 0-4 (shipped)": LAYERS,
        "states 0-4 + |change| of 0-4": [*LAYERS, *delta],
        "states 0-4 + |change| of 3-4": [*LAYERS, n + 3, n + 4],
    }
    results = {}
    for title, layers in layer_sets.items():
        cells = []
        for test in TESTS:
            train = [sets[ch] for ch in TRAIN_CHANNELS]
            result = recipe_loso(train, sets[test], test, [copies], GROUPS, layers)
            results[(title, test)] = result
            cells.append(f"{test} EER {100 * result.metrics.eer:5.2f} % minDCF {result.metrics.min_dcf:.3f}")
        print(f"{title:32s} " + "  ".join(cells), flush=True)
    folds = np.array([fold_key(it, GROUPS) for it in sets["clean"].items])
    base = next(iter(layer_sets))
    for title in list(layer_sets)[1:]:
        for test in TESTS:
            print_comparison(f"{title}, {test}", results[(base, test)], results[(title, test)], folds)


if __name__ == "__main__":
    main()
