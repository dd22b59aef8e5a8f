"""Deterministic channel transforms applied identically to both classes.

``telephone`` is the G.711 call path: band-limit to 8 kHz, mu-law encode/decode, back to
the model rate. The fuller augmentation set (GSM, Opus, noise, reverb) lives in
``augment.py``; these two names are the ones the embedding cache and reports key on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError
from spoofwatch.stream.pcm import mulaw_decode, mulaw_encode, resample

Channel = Callable[[NDArray[np.float32], int], NDArray[np.float32]]


def clean(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    return samples


def telephone_mulaw(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """G.711 mu-law at 8 kHz, returned at ``sample_rate`` with the same length."""
    narrow = resample(samples, sample_rate, 8000)
    coded = mulaw_decode(mulaw_encode(np.clip(narrow, -1.0, 1.0)))
    wide = resample(coded, 8000, sample_rate)
    out = np.zeros(len(samples), dtype=np.float32)
    n = min(len(out), len(wide))
    out[:n] = wide[:n]
    return out


def augmented(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """A random codec/noise/reverb/gain/band-limit/packet-loss chain, seeded per clip."""
    from spoofwatch.train.augment import augmented_channel

    return augmented_channel(samples, sample_rate)


CHANNELS: dict[str, Channel] = {"clean": clean, "telephone": telephone_mulaw, "augmented": augmented}


def get_channel(name: str) -> Channel:
    try:
        return CHANNELS[name]
    except KeyError:
        raise ConfigError(f"unknown channel {name!r}; expected one of {sorted(CHANNELS)}") from None
