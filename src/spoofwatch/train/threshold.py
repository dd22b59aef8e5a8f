"""Decision-threshold policies, chosen on dev clip scores.

LLRs are bona-fide-positive (ASVspoof convention) and a clip is called spoof when
``p_spoof = 1 / (1 + e^llr) >= threshold``, i.e. when ``llr <= log((1 - p) / p)``.
A *false alarm* is a bona fide clip called spoof: the genuine caller a call centre
would challenge, so a target false-alarm rate is the policy such teams ask for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, DataError
from spoofwatch.train.metrics import compute_eer

# p_spoof thresholds are kept strictly inside (0, 1), where the detector accepts them.
_P_MIN, _P_MAX = 1e-12, 1.0 - 1e-12


@dataclass(frozen=True)
class ThresholdPolicy:
    """``bayes`` (p_spoof 0.5: the Bayes decision for the calibrated LLR at equal priors),
    ``eer`` (the dev EER point) or ``false-alarm:R`` (at most a fraction R of dev bona
    fide clips called spoof, missing as few spoofs as that allows)."""

    kind: str
    rate: float | None = None

    def __str__(self) -> str:
        return f"false-alarm:{self.rate:g}" if self.kind == "false-alarm" else self.kind


def parse_policy(text: str) -> ThresholdPolicy:
    value = text.strip().lower()
    if value in ("bayes", "eer"):
        return ThresholdPolicy(value)
    if value.startswith("false-alarm:"):
        raw = value.split(":", 1)[1]
        try:
            rate = float(raw)
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"threshold policy {text!r}: expected a false-alarm rate in [0, 1), e.g. 0.01")
        return ThresholdPolicy("false-alarm", rate)
    raise ConfigError(f"threshold policy {text!r}: expected 'bayes', 'eer' or 'false-alarm:RATE' (e.g. 0.01)")


@dataclass(frozen=True)
class ThresholdChoice:
    policy: ThresholdPolicy
    p_spoof: float
    llr: float
    false_alarm_rate: float
    miss_rate: float
    n_bonafide: int
    n_spoof: int

    def to_card(self) -> dict[str, Any]:
        return {
            "p_spoof": self.p_spoof,
            "policy": str(self.policy),
            "llr": self.llr,
            "dev_false_alarm_rate": self.false_alarm_rate,
            "dev_miss_rate": self.miss_rate,
            "dev_clips": {"bonafide": self.n_bonafide, "spoof": self.n_spoof},
        }


def p_spoof_at(llr: float) -> float:
    return float(np.clip(1.0 / (1.0 + math.exp(min(llr, 700.0))), _P_MIN, _P_MAX))


def llr_threshold(p_spoof_threshold: float) -> float:
    """The LLR at which p_spoof = 1 / (1 + e^llr) equals the threshold."""
    return math.log((1.0 - p_spoof_threshold) / p_spoof_threshold)


def choose_threshold(
    policy: ThresholdPolicy, bonafide_llr: NDArray[np.float64], spoof_llr: NDArray[np.float64]
) -> ThresholdChoice:
    bona = np.sort(np.asarray(bonafide_llr, dtype=np.float64))
    spoof = np.asarray(spoof_llr, dtype=np.float64)
    if bona.size == 0 or spoof.size == 0:
        raise DataError(
            f"choosing a threshold needs dev clips of both classes, found {bona.size} bona fide "
            f"and {spoof.size} spoof"
        )
    if policy.kind == "bayes":
        llr = 0.0
    elif policy.kind == "eer":
        llr = compute_eer(bona, spoof)[1]
    else:
        assert policy.rate is not None
        # At most `allowed` bona fide clips may score at or below the threshold. Sit halfway
        # between the first bona fide score that must stay above it and the highest score of
        # either class below that one: every spoof below it is caught, and the margin
        # survives the round trip through p_spoof.
        allowed = math.floor(policy.rate * bona.size + 1e-9)
        if allowed >= bona.size:
            llr = float(max(bona[-1], spoof.max()))
        else:
            keep_above = float(bona[allowed])
            below = np.concatenate([bona[bona < keep_above], spoof[spoof < keep_above]])
            lower = float(below.max()) if below.size else keep_above - 1.0
            llr = (lower + keep_above) / 2.0
    p_spoof = p_spoof_at(llr)
    effective = llr_threshold(p_spoof)  # what the detector will actually apply after clipping p
    return ThresholdChoice(
        policy=policy,
        p_spoof=p_spoof,
        llr=effective,
        false_alarm_rate=float(np.mean(bona <= effective)),
        miss_rate=float(np.mean(spoof > effective)),
        n_bonafide=int(bona.size),
        n_spoof=int(spoof.size),
    )
