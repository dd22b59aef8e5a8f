"""Temporal dynamics of the Whisper states beside their mean and std: for each state the
absolute frame-to-frame change |h[t+1] - h[t]| (20 ms frames), pooled by its mean and std
over the window, added to the shipped recipe's features (Asterisk sources as one fold,
three training channels, FARGAN copies through the clean channel). Synthetic speech is
often smoother or more regular over time than a recording (a TTS acoustic model's
over-smoothing, a vocoder's frame-rate periodicity); the shipped mean+std pooling cannot
see order in time at all.

    PYTHONPATH=src python research/temporal_dynamics.py --manifest ../shared/corpus/manifest.csv

Needs the copies (`spoofwatch copysynth --out C`, default in the cache as made by
scripts/train_default.sh). The states with their changes are cached as an encoder of their
own (name ``whisper-base+absdelta``, twice the hidden states); about 6 minutes per channel
to extract on 2 cores, then about 5 minutes per leave-one-source-out run.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from copies_grouped import ASTERISK_AS_ONE, SHIPPED_CHANNELS, compare_to_first, loso_grid, recipe_parser
from spectral_blocks import LAYERS, recipe_extractor

from spoofwatch.model.encoders.base import Encoder, EncoderIdentity
from spoofwatch.train.corpus import read_manifest


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
    args = recipe_parser(__doc__).parse_args()
    extract = recipe_extractor(wrap=WithAbsDelta)
    items = read_manifest(args.manifest)
    sets = {ch: extract(items, ch) for ch in SHIPPED_CHANNELS}
    copies = extract(read_manifest(args.copies), "clean")
    n = len(LAYERS)  # the encoder runs as deep as states 0-4: state n + i is the change of state i
    # title: Whisper states (and their changes) the head sees; the spectral block is always in
    layers = {
        "states 0-4 (shipped)": LAYERS,
        "states 0-4 + |change| of 0-4": [*LAYERS, *(n + layer for layer in LAYERS)],
        "states 0-4 + |change| of 3-4": [*LAYERS, n + 3, n + 4],
    }
    train = [sets[ch] for ch in SHIPPED_CHANNELS]
    grid = {title: (train, [copies]) for title in layers}
    results = loso_grid(grid, {test: sets[test] for test in SHIPPED_CHANNELS}, ASTERISK_AS_ONE, layers)
    compare_to_first(results, list(layers), SHIPPED_CHANNELS, ASTERISK_AS_ONE)


if __name__ == "__main__":
    main()
