"""research/gap_false_alarms.py's calls: the comfort-noise holes replace only the pauses, and
the ``g711-pcmu`` channel encodes a gateway's filler to mu-law as a PCMU source delivers it,
leaving the rest of the (already mu-law) call as it was."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from research_kit import research_script
from spoofwatch.audio.pcm import mulaw_decode, mulaw_encode

SR = 8000


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return research_script("gap_false_alarms")


def talk_pause_talk() -> np.ndarray:
    """A mu-law call: 1 s of tone, 0.5 s of quiet pink-ish background, 1 s of tone."""
    t = np.arange(SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    background = 3e-4 * np.cumsum(np.random.default_rng(1).standard_normal(SR // 2)) / 30
    audio = np.concatenate([tone, background - background.mean(), tone]).astype(np.float32)
    out: np.ndarray = mulaw_decode(mulaw_encode(audio))
    return out


@pytest.mark.parametrize("hole", ["dtx", "dtx-matched", "dtx-level"])
def test_comfort_noise_replaces_only_the_pause(script: ModuleType, hole: str) -> None:
    audio = talk_pause_talk()
    call = script.make_call(audio, SR, hole)
    assert call.holes == [pytest.approx((1.0, 1.5))]
    out = call.pieces[0].audio
    np.testing.assert_array_equal(out[:SR], audio[:SR])
    np.testing.assert_array_equal(out[-SR:], audio[-SR:])
    pause, filled = audio[SR : SR + SR // 2], out[SR : SR + SR // 2]
    assert not np.array_equal(filled, pause)
    level = 20 * np.log10(np.sqrt(np.mean(filled.astype(np.float64) ** 2)))
    if hole == "dtx":
        assert level == pytest.approx(-60.0, abs=0.5)
    else:  # a silence descriptor carries the pause's own level
        assert level == pytest.approx(20 * np.log10(np.sqrt(np.mean(pause.astype(np.float64) ** 2))), abs=0.5)


def test_the_pcmu_channel_encodes_the_filler_and_keeps_known_gaps(script: ModuleType) -> None:
    audio = talk_pause_talk()
    call = script.make_call(audio, SR, "dtx-matched")
    sent = script.delivered(call, "g711-pcmu")
    out = sent.pieces[0].audio
    np.testing.assert_array_equal(out[:SR], audio[:SR])  # mu-law already: unchanged
    filler = out[SR : SR + SR // 2]
    np.testing.assert_array_equal(filler, mulaw_decode(mulaw_encode(filler)))
    assert not np.array_equal(filler, call.pieces[0].audio[SR : SR + SR // 2])  # it was not mu-law
    assert script.delivered(call, "g711") is call
    gap_call = script.delivered(script.make_call(audio, SR, "discarded-1s"), "g711-pcmu")
    assert [p.audio is None for p in gap_call.pieces] == [False, True, False]
    assert gap_call.pieces[1].seconds == 1.0 and gap_call.pieces[1].cause == "discarded"
