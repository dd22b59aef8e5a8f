"""Turning per-window scores into a steady alarm: LLR smoothing and hysteresis.

Scores are calibrated log-likelihood ratios (natural log, bona fide over spoof; higher =
more bona fide). ``p_spoof = 1 / (1 + e^llr)`` assumes equal priors.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Literal

from spoofwatch.errors import ConfigError

__all__ = ["AlarmState", "Hysteresis", "LlrSmoother", "llr_from_p_spoof", "p_spoof_from_llr"]

logger = logging.getLogger(__name__)

AlarmState = Literal["on", "off"]
SmoothingMode = Literal["ema", "mean"]


def p_spoof_from_llr(llr: float) -> float:
    """Spoof probability 1 / (1 + e^llr), without overflow for any finite or infinite llr."""
    if math.isnan(llr):
        raise ValueError("llr: expected a number, got NaN")
    if llr >= 0:
        e = math.exp(-llr)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(llr))


def llr_from_p_spoof(p_spoof: float) -> float:
    """Inverse of ``p_spoof_from_llr``: ln((1 - p) / p); ±inf at p = 0 and p = 1."""
    if not 0.0 <= p_spoof <= 1.0:  # also rejects NaN
        raise ValueError(f"p_spoof: expected a probability in [0, 1], got {p_spoof!r}")
    if p_spoof == 0.0:
        return math.inf
    if p_spoof == 1.0:
        return -math.inf
    return math.log1p(-p_spoof) - math.log(p_spoof)


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


class LlrSmoother:
    """Smooths a stream of per-window LLRs: mean of the last ``n``, or an EMA with ``alpha``.

    The EMA starts at the first value fed; ``alpha`` is the weight of the newest value.
    """

    def __init__(self, mode: SmoothingMode = "mean", n: int = 4, alpha: float = 0.5) -> None:
        if mode not in ("ema", "mean"):
            raise ConfigError(f"mode: expected 'ema' or 'mean', got {mode!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n: expected an int >= 1, got {n!r}")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"alpha: expected 0 < alpha <= 1, got {alpha!r}")
        self.mode: SmoothingMode = mode
        self.n = n
        self.alpha = float(alpha)
        self._recent: deque[float] = deque(maxlen=n)
        self._ema: float | None = None

    @property
    def value(self) -> float | None:
        """The latest smoothed LLR, or None before the first ``feed``."""
        if self.mode == "ema":
            return self._ema
        return math.fsum(self._recent) / len(self._recent) if self._recent else None

    def feed(self, llr: float) -> float:
        """Add one window's LLR; return the smoothed LLR including it."""
        x = _finite("llr", llr)
        if self.mode == "ema":
            self._ema = x if self._ema is None else self.alpha * x + (1.0 - self.alpha) * self._ema
            return self._ema
        self._recent.append(x)
        return math.fsum(self._recent) / len(self._recent)

    def reset(self) -> None:
        """Forget all history."""
        self._recent.clear()
        self._ema = None


class Hysteresis:
    """Alarm state machine on spoof probability.

    Turns on when ``p >= on_threshold`` (and it has been off at least ``min_off_s``); turns
    off only when ``p < off_threshold`` and it has been on at least ``min_on_s``. Times are
    seconds of stream audio and must not go backwards.
    """

    def __init__(
        self,
        on_threshold: float = 0.5,
        off_threshold: float = 0.35,
        min_on_s: float = 2.0,
        min_off_s: float = 0.0,
    ) -> None:
        for name, value in (("on_threshold", on_threshold), ("off_threshold", off_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}: expected a probability in [0, 1], got {value!r}")
        if off_threshold > on_threshold:
            raise ConfigError(
                f"off_threshold: expected <= on_threshold ({on_threshold}), got {off_threshold}"
            )
        for name, value in (("min_on_s", min_on_s), ("min_off_s", min_off_s)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"{name}: expected a finite number of seconds >= 0, got {value!r}")
        self.on_threshold = float(on_threshold)
        self.off_threshold = float(off_threshold)
        self.min_on_s = float(min_on_s)
        self.min_off_s = float(min_off_s)
        self._state: AlarmState = "off"
        self._since: float | None = None  # time of the last transition
        self._last_t: float | None = None

    @property
    def state(self) -> AlarmState:
        return self._state

    def feed(self, p_spoof: float, t: float) -> AlarmState | None:
        """Add one probability at stream time ``t``; return the new state if it changed."""
        if not 0.0 <= p_spoof <= 1.0:  # also rejects NaN
            raise ValueError(f"p_spoof: expected a probability in [0, 1], got {p_spoof!r}")
        _finite("t", t)
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"t: expected >= previous t {self._last_t}, got {t}")
        self._last_t = t
        held = math.inf if self._since is None else t - self._since
        if self._state == "off":
            if p_spoof >= self.on_threshold and held >= self.min_off_s:
                return self._switch("on", t)
        elif p_spoof < self.off_threshold and held >= self.min_on_s:
            return self._switch("off", t)
        return None

    def _switch(self, state: AlarmState, t: float) -> AlarmState:
        self._state = state
        self._since = t
        return state

    def reset(self) -> None:
        """Back to "off" with no history."""
        self._state = "off"
        self._since = None
        self._last_t = None
