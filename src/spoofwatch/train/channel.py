"""Deterministic channel transforms applied identically to both classes.

``telephone`` is the G.711 call path: band-limit to 8 kHz, mu-law encode/decode, back to
the model rate. ``level`` and ``telephone-level`` first scale each clip by a gain drawn
from -20..+6 dB (clipped at full scale), as callers' levels differ: they measure how much
a detector's scores depend on level. The fuller augmentation set (GSM, Opus, noise, reverb) lives in
``augment.py``; these names are the ones the embedding cache and reports key on.
``telephone-gaps`` is ``telephone`` with a call-path filler (comfort noise, concealment,
digital silence) in every clip; ``telephone-sid-gaps`` the same with comfort noise made from
each pause's own silence descriptor, as a DTX decoder makes it. ``voip`` is a messaging or
meeting app's path (WebRTC noise suppression and gain control, low-rate Opus; ``voip.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from spoofwatch.audio.pcm import mulaw_decode, mulaw_encode
from spoofwatch.audio.resample import resample
from spoofwatch.errors import ConfigError

Channel = Callable[[NDArray[np.float32], int], NDArray[np.float32]]


def clean(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    return samples


def telephone_mulaw(
    samples: NDArray[np.float32],
    sample_rate: int,
    after_codec: Callable[[NDArray[np.float32]], NDArray[np.float32]] | None = None,
) -> NDArray[np.float32]:
    """G.711 mu-law at 8 kHz, returned at ``sample_rate`` with the same length;
    ``after_codec`` changes the decoded 8 kHz audio first (a gateway's filler)."""
    narrow = resample(samples, sample_rate, 8000)
    coded = mulaw_decode(mulaw_encode(np.clip(narrow, -1.0, 1.0)))
    if after_codec is not None:
        coded = after_codec(coded).astype(np.float32)
    wide = resample(coded, 8000, sample_rate)
    out = np.zeros(len(samples), dtype=np.float32)
    n = min(len(out), len(wide))
    out[:n] = wide[:n]
    return out


LEVEL_RANGE_DB = (-20.0, 6.0)


def random_level(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """The clip at a gain drawn from ``LEVEL_RANGE_DB``, seeded by its samples (so the
    embedding cache stays valid), clipped to full scale."""
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(samples).tobytes()))
    gain = 10.0 ** (rng.uniform(*LEVEL_RANGE_DB) / 20.0)
    out: NDArray[np.float32] = np.clip(samples * gain, -1.0, 1.0).astype(np.float32)
    return out


def telephone_random_level(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """A caller at a random level (``random_level``) through the G.711 call path."""
    return telephone_mulaw(random_level(samples, sample_rate), sample_rate)


def augmented(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """A random codec/noise/reverb/gain/band-limit/packet-loss chain, seeded per clip."""
    from spoofwatch.train.augment import augmented_channel

    return augmented_channel(samples, sample_rate)


def augmented_gaps(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """``augmented``, then on half the clips comfort noise in the pauses, concealed packet
    loss or digital silence (``concealment.py``), as call paths fill missing audio."""
    from spoofwatch.train.augment import augmented_gaps_channel

    return augmented_gaps_channel(samples, sample_rate)


def _telephone_filled(
    samples: NDArray[np.float32], sample_rate: int, fillers: tuple[str, ...]
) -> NDArray[np.float32]:
    """The G.711 call path with one of ``fillers`` (``concealment.FILLERS``) drawn for every
    clip, seeded by its samples, made at 8 kHz after the codec."""
    from spoofwatch.train.concealment import gaps_seed, with_gaps

    rng = np.random.default_rng(gaps_seed(samples))
    return telephone_mulaw(
        samples, sample_rate, lambda coded: with_gaps(coded, 8000, rng, p=1.0, fillers=fillers)[0]
    )


def telephone_gaps(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """The G.711 call path with one call-path filler on every clip, made at 8 kHz after the
    codec as a gateway or jitter buffer makes it (DTX comfort noise half the time, concealed
    packet loss or digital silence a quarter each; ``concealment.py``), then back to the
    model rate. ``augmented-gaps`` puts its fillers after a random chain that is G.711 only
    now and then, so comfort noise in a phone call's pauses was rarely seen in training."""
    from spoofwatch.train.concealment import DRAWN_FILLERS

    return _telephone_filled(samples, sample_rate, DRAWN_FILLERS)


def telephone_sid_gaps(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """``telephone-gaps`` with DTX comfort noise made from each pause's own level and
    spectral envelope (``concealment.dtx_sid``), as an RFC 3389 decoder makes it from the
    silence descriptors: coloured like the pause, so the comfort-noise rule (which splices
    only flat noise) leaves it in the scored audio (issue 33)."""
    from spoofwatch.train.concealment import SID_FILLERS

    return _telephone_filled(samples, sample_rate, SID_FILLERS)


def voip(samples: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """A VoIP app's path (``voip.voip_app``): WebRTC noise suppression and gain control, Opus
    at 8–24 kbit/s, now and then background noise before and packet loss after, seeded per clip."""
    from spoofwatch.train.voip import voip_app

    return voip_app(samples, sample_rate)


CHANNELS: dict[str, Channel] = {
    "clean": clean,
    "telephone": telephone_mulaw,
    "augmented": augmented,
    "augmented-gaps": augmented_gaps,
    "telephone-gaps": telephone_gaps,
    "telephone-sid-gaps": telephone_sid_gaps,
    "level": random_level,
    "telephone-level": telephone_random_level,
    "voip": voip,
}


def get_channel(name: str) -> Channel:
    try:
        return CHANNELS[name]
    except KeyError:
        raise ConfigError(f"unknown channel {name!r}; expected one of {sorted(CHANNELS)}") from None
