"""Per-window active-level normalisation (model.level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spoofwatch.errors import ModelError
from spoofwatch.model.level import MAX_GAIN_DB, active_level_gain, normalise_level

RATE = 16000
FRAME = 320  # 20 ms


def speech_like(seed: int, samples: int = 64000, pause_from: float = 1.0) -> torch.Tensor:
    """Amplitude-modulated noise; silent (digital zero) after ``pause_from`` of the window."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    x = rng.standard_normal(samples) * envelope * 0.1
    x[int(pause_from * samples) :] = 0.0
    return torch.from_numpy(x.astype(np.float32))


def active_dbfs(window: torch.Tensor) -> float:
    frames = window.reshape(-1, FRAME).double().square().mean(dim=1)
    db = 10 * torch.log10(frames + 1e-20)
    active = frames[db >= db.max() - 40]
    return float(10 * torch.log10(active.mean()))


def test_windows_at_any_gain_come_out_the_same() -> None:
    x = torch.stack([speech_like(0), speech_like(1)])
    quiet = normalise_level(x * 0.01, RATE, -26.0)
    loud = normalise_level(x * 3.0, RATE, -26.0)
    assert torch.allclose(quiet, loud, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(quiet[0], quiet[1])


def test_active_level_reaches_the_target_and_pauses_do_not_raise_the_gain() -> None:
    talk = speech_like(2)
    half = speech_like(2, pause_from=0.5)  # the same speech, then half a window of silence
    out = normalise_level(torch.stack([talk, half]), RATE, -30.0)
    assert active_dbfs(out[0]) == pytest.approx(-30.0, abs=0.05)
    assert active_dbfs(out[1]) == pytest.approx(-30.0, abs=0.05)
    gains = active_level_gain(torch.stack([talk, half]), RATE, -30.0)
    # a plain RMS would boost the half-silent window by 3 dB more
    assert float(20 * torch.log10(gains[1] / gains[0])) == pytest.approx(0.0, abs=0.3)


def test_silence_stays_silent_and_the_gain_is_capped() -> None:
    silent = torch.zeros(1, 64000)
    out = normalise_level(silent, RATE, -26.0)
    assert torch.equal(out, silent)
    faint = speech_like(3)[None] * 1e-6  # about -130 dBFS
    gain_db = float(20 * torch.log10(active_level_gain(faint, RATE, -26.0)[0]))
    assert gain_db == pytest.approx(MAX_GAIN_DB)
    assert torch.isfinite(normalise_level(faint, RATE, -26.0)).all()


def test_bad_targets_and_shapes_are_refused() -> None:
    with pytest.raises(ModelError, match=r"within -60..0 dBFS, found 6"):
        normalise_level(torch.zeros(1, 64000), RATE, 6.0)
    with pytest.raises(ModelError, match=r"shape \(batch, samples\)"):
        normalise_level(torch.zeros(64000), RATE, -26.0)
    with pytest.raises(ModelError, match="shorter than one 320-sample frame"):
        normalise_level(torch.zeros(2, 100), RATE, -26.0)
