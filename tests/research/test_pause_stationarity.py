"""research/pause_stationarity.py's ``z``: about 1 or below for stationary noise of any
colour (what a comfort-noise decoder makes), well above for a pause that changes level."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from scipy.signal import lfilter

from research_kit import research_script

SR = 8000


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return research_script("pause_stationarity")


def test_stationary_noise_white_or_coloured_scores_near_one(script: ModuleType) -> None:
    rng = np.random.default_rng(0)
    white = 0.01 * rng.standard_normal(2 * SR)
    coloured = lfilter([1.0], [1.0, -0.9], white)  # strongly low-pass: few degrees of freedom
    for noise in (white, coloured):
        z = script.stationarity(noise.astype(np.float32), SR, [(0.0, 2.0)])
        assert len(z) == 100 - script.BLOCK + 1
        assert np.median(z) < 1.3


def test_a_breathing_pause_scores_high_and_only_blocks_inside_the_pause_count(script: ModuleType) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    breathing = 0.01 * rng.standard_normal(2 * SR) * (1.0 + 0.9 * np.sin(2 * np.pi * 3.0 * t))
    z = script.stationarity(breathing.astype(np.float32), SR, [(0.0, 1.0)])
    assert len(z) == 50 - script.BLOCK + 1  # the second second is not a pause
    assert np.median(z) > 2.0


def test_digital_zeros_give_nan_not_a_division_warning(script: ModuleType) -> None:
    z = script.stationarity(np.zeros(SR, dtype=np.float32), SR, [(0.0, 1.0)])
    assert np.isnan(z).all()
