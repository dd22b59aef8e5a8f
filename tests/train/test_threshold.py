"""Threshold policies: parsing, and the dev false-alarm / miss rates they promise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofwatch.errors import ConfigError, DataError
from spoofwatch.train.metrics import compute_eer
from spoofwatch.train.threshold import ThresholdPolicy, choose_threshold, llr_threshold, parse_policy


def test_parse_policy_accepts_the_three_forms() -> None:
    assert parse_policy("bayes") == ThresholdPolicy("bayes")
    assert parse_policy(" EER ") == ThresholdPolicy("eer")
    assert parse_policy("false-alarm:0.01") == ThresholdPolicy("false-alarm", 0.01)
    assert str(parse_policy("false-alarm:0.05")) == "false-alarm:0.05"


@pytest.mark.parametrize(
    "text", ["", "median", "false-alarm:", "false-alarm:x", "false-alarm:1.5", "far:0.1"]
)
def test_parse_policy_names_what_it_expected(text: str) -> None:
    with pytest.raises(ConfigError, match="expected"):
        parse_policy(text)


def test_bayes_is_p_spoof_one_half() -> None:
    choice = choose_threshold(parse_policy("bayes"), np.array([1.0, 2.0, -0.5]), np.array([-2.0, 0.5]))
    assert choice.p_spoof == pytest.approx(0.5)
    assert choice.false_alarm_rate == pytest.approx(1 / 3)  # -0.5 <= 0
    assert choice.miss_rate == pytest.approx(1 / 2)  # 0.5 > 0


def test_eer_policy_sits_at_the_eer_threshold() -> None:
    rng = np.random.default_rng(0)
    bona, spoof = rng.normal(1.0, 1.0, 400), rng.normal(-1.0, 1.0, 300)
    choice = choose_threshold(parse_policy("eer"), bona, spoof)
    assert choice.llr == pytest.approx(compute_eer(bona, spoof)[1], abs=1e-9)
    assert abs(choice.false_alarm_rate - choice.miss_rate) < 0.02


def test_false_alarm_policy_flags_exactly_the_allowed_share_of_bona_fide() -> None:
    bona = np.array([-3.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    spoof = np.array([-4.0, -2.0, -0.5, 0.5, 8.0])
    choice = choose_threshold(parse_policy("false-alarm:0.1"), bona, spoof)
    assert choice.false_alarm_rate == pytest.approx(0.1)  # only -3.0 is flagged
    assert -2.0 < choice.llr < -1.0  # above the spoof at -2.0, below the bona fide at -1.0
    assert choice.miss_rate == pytest.approx(3 / 5)  # -4.0 and -2.0 are caught
    zero = choose_threshold(parse_policy("false-alarm:0"), bona, spoof)
    assert zero.false_alarm_rate == 0.0 and -4.0 < zero.llr < -3.0
    assert zero.to_card()["policy"] == "false-alarm:0" and zero.to_card()["p_spoof"] == zero.p_spoof


def test_choose_threshold_needs_both_classes() -> None:
    with pytest.raises(DataError, match="both classes"):
        choose_threshold(parse_policy("eer"), np.array([1.0]), np.array([]))


@settings(max_examples=200, deadline=None)
@given(
    # Scores on a 0.001 grid: real LLRs are never a few ulps apart.
    bona=st.lists(st.integers(-20000, 20000).map(lambda v: v / 1000), min_size=1, max_size=60),
    spoof=st.lists(st.integers(-20000, 20000).map(lambda v: v / 1000), min_size=1, max_size=60),
    rate=st.floats(0.0, 0.99),
)
def test_false_alarm_policy_never_exceeds_its_rate_and_misses_no_more_than_needed(
    bona: list[float], spoof: list[float], rate: float
) -> None:
    b, s = np.array(bona), np.array(spoof)
    choice = choose_threshold(ThresholdPolicy("false-alarm", rate), b, s)
    # The detector applies the p_spoof threshold, so check the rule through it.
    applied = llr_threshold(choice.p_spoof)
    assert math.isclose(applied, choice.llr)
    assert np.mean(b <= applied) <= rate + 1e-12
    # Any larger threshold that is still allowed catches no more spoofs than this one.
    for t in np.unique(np.concatenate([b, s])):
        if t > applied and np.mean(b <= t) <= rate:
            assert np.sum(s <= t) == np.sum(s <= applied)
