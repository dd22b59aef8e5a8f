"""Tests of LLR/probability conversion, LLR smoothing and the alarm hysteresis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofwatch.errors import ConfigError
from spoofwatch.stream.core.smoothing import (
    Hysteresis,
    LlrSmoother,
    llr_from_p_spoof,
    p_spoof_from_llr,
)

# --- conversions -----------------------------------------------------------------------------


@pytest.mark.parametrize("llr", [-30.0, -2.5, -0.1, 0.0, 0.3, 4.0, 30.0])
def test_p_spoof_matches_the_logistic_formula(llr: float) -> None:
    assert p_spoof_from_llr(llr) == pytest.approx(1.0 / (1.0 + math.exp(llr)), rel=1e-12)


def test_p_spoof_at_zero_is_a_half() -> None:
    assert p_spoof_from_llr(0.0) == 0.5


@pytest.mark.parametrize("llr", [1e4, 1e308, math.inf])
def test_p_spoof_does_not_overflow_for_huge_llr(llr: float) -> None:
    assert p_spoof_from_llr(llr) == pytest.approx(0.0, abs=1e-300)
    assert p_spoof_from_llr(-llr) == 1.0


def test_p_spoof_of_nan_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        p_spoof_from_llr(math.nan)


@settings(max_examples=50, deadline=None)
@given(llr=st.floats(-20, 40))
def test_llr_round_trips_through_p_spoof(llr: float) -> None:
    # Below about -20, p_spoof is so close to 1 that float64 cannot hold 1 - p exactly.
    assert llr_from_p_spoof(p_spoof_from_llr(llr)) == pytest.approx(llr, abs=1e-6)


def test_llr_of_certain_probabilities_is_infinite() -> None:
    assert llr_from_p_spoof(0.0) == math.inf
    assert llr_from_p_spoof(1.0) == -math.inf


@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan])
def test_llr_of_non_probability_is_rejected(p: float) -> None:
    with pytest.raises(ValueError, match=r"expected a probability in \[0, 1\]"):
        llr_from_p_spoof(p)


# --- LlrSmoother -----------------------------------------------------------------------------


def _llrs(k: int) -> list[float]:
    return [float(x) for x in np.random.default_rng(k).normal(0, 3, k)]


@pytest.mark.parametrize("n", [1, 3, 4])
def test_mean_smoother_is_the_mean_of_the_last_n(n: int) -> None:
    values = _llrs(12)
    smoother = LlrSmoother("mean", n=n)
    for i, x in enumerate(values):
        assert smoother.feed(x) == pytest.approx(np.mean(values[max(0, i - n + 1) : i + 1]))
    assert smoother.value == pytest.approx(np.mean(values[-n:]))


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0])
def test_ema_smoother_matches_the_closed_form(alpha: float) -> None:
    values = _llrs(10)
    smoother = LlrSmoother("ema", alpha=alpha)
    for k, x in enumerate(values):
        got = smoother.feed(x)
        weights = np.array([alpha * (1 - alpha) ** (k - j) for j in range(k + 1)])
        weights[0] = (1 - alpha) ** k  # the first value seeds the average
        assert got == pytest.approx(float(weights @ np.array(values[: k + 1])))


def test_smoother_reset_forgets_history() -> None:
    for mode in ("mean", "ema"):
        smoother = LlrSmoother(mode, n=3)
        smoother.feed(10.0)
        smoother.reset()
        assert smoother.value is None
        assert smoother.feed(-2.0) == -2.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_smoother_rejects_non_finite_llr(bad: float) -> None:
    smoother = LlrSmoother()
    smoother.feed(1.0)
    with pytest.raises(ValueError, match="llr: expected a finite number"):
        smoother.feed(bad)
    assert smoother.value == 1.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"mode": "median"}, "mode"), ({"n": 0}, "n"), ({"alpha": 0.0}, "alpha"), ({"alpha": 2}, "alpha")],
)
def test_smoother_config_is_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        LlrSmoother(**kwargs)  # type: ignore[arg-type]


# --- Hysteresis ------------------------------------------------------------------------------


def test_alarm_turns_on_at_threshold_and_holds_in_the_dead_band() -> None:
    alarm = Hysteresis(on_threshold=0.5, off_threshold=0.35, min_on_s=0.0)
    # (transition returned, state afterwards); tuples keep mypy from narrowing `state`.
    assert (alarm.feed(0.49, 0.0), alarm.state) == (None, "off")
    assert (alarm.feed(0.5, 1.0), alarm.state) == ("on", "on")
    assert (alarm.feed(0.9, 2.0), alarm.state) == (None, "on")
    assert (alarm.feed(0.35, 3.0), alarm.state) == (None, "on")  # not below off_threshold
    assert (alarm.feed(0.34, 4.0), alarm.state) == ("off", "off")
    assert alarm.feed(0.45, 5.0) is None  # in the dead band: stays off


def test_alarm_stays_on_for_at_least_min_on_s() -> None:
    alarm = Hysteresis(min_on_s=2.0)
    assert alarm.feed(0.8, 10.0) == "on"
    assert alarm.feed(0.0, 11.0) is None
    assert alarm.feed(0.0, 11.99) is None
    assert alarm.feed(0.0, 12.0) == "off"


def test_alarm_stays_off_for_at_least_min_off_s() -> None:
    alarm = Hysteresis(min_on_s=0.0, min_off_s=1.5)
    assert alarm.feed(0.9, 0.0) == "on"  # no earlier "off" transition to wait after
    assert alarm.feed(0.1, 1.0) == "off"
    assert alarm.feed(0.9, 2.0) is None
    assert alarm.feed(0.9, 2.5) == "on"


def test_alarm_reset_returns_to_off() -> None:
    alarm = Hysteresis(min_on_s=5.0)
    alarm.feed(0.9, 3.0)
    alarm.reset()
    assert alarm.state == "off"
    assert alarm.feed(0.9, 0.0) == "on"  # time may restart after reset


def test_alarm_rejects_time_going_backwards_and_bad_probabilities() -> None:
    alarm = Hysteresis()
    alarm.feed(0.1, 5.0)
    with pytest.raises(ValueError, match=r"t: expected >= previous t 5.0, got 4.0"):
        alarm.feed(0.1, 4.0)
    for p in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError, match="p_spoof"):
            alarm.feed(p, 6.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"on_threshold": 0.3, "off_threshold": 0.4}, "off_threshold"),
        ({"on_threshold": 1.2}, "on_threshold"),
        ({"min_on_s": -1.0}, "min_on_s"),
        ({"min_off_s": math.nan}, "min_off_s"),
    ],
)
def test_hysteresis_config_is_validated(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        Hysteresis(**kwargs)
