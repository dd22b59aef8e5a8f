"""Drift alarms: has the node's input moved away from what its detector was calibrated on?

Each scored window gives three features: its score (calibrated LLR), its level (dBFS of
the whole window) and its speech share (fraction of 20 ms frames above the speech gate's
level). The node keeps fixed-bin histograms of them over a sliding period (``window_s``,
in ``SLOTS`` time slots: memory is bounded by the bins, never by the traffic) and
compares each with the reference histogram stored in the detector card
(``drift_reference``, written by ``scripts/drift_reference.py`` or ``spoofwatch train``
from the dev windows under the calibration channels).

The statistic is the Jensen-Shannon divergence in bits, per feature; the node's drift
statistic is the largest of the three. Jensen-Shannon rather than PSI (the symmetric
KL divergence): it is bounded (0..1 bit), so one threshold means the same on every feature,
and it stays finite when a bin is empty on one side (a codec pushes scores into bins the
reference never saw), where PSI needs an arbitrary epsilon that then dominates its value.
Score and level count speech windows only (the score of silence says nothing about the
detector); speech share counts every window.

A node can be compared with its own normal instead (``engine.drift_reference``): a file
holding the same section made from the node's genuine calls with its own detector
(``scripts/drift_reference.py --out``); the card's reference is a mix of many genuine
sources, and one source alone can sit as far from that mix as a codec moves it.

``DriftMonitor.observe`` returns a ``DriftEvent`` when the statistic crosses
``threshold`` (at least ``min_windows`` windows in the period) and again when it falls
below ``rearm`` times the threshold (hysteresis, like the alarm's).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.events import DriftEvent

if TYPE_CHECKING:
    from spoofwatch.config import EngineConfig
    from spoofwatch.stream.core.windowing import Window
    from spoofwatch.stream.engine.pipeline import Pipeline, StreamHandle

logger = logging.getLogger(__name__)

CARD_KEY: Final = "drift_reference"
FEATURES: Final = ("score", "level_dbfs", "speech_share")
STATISTIC: Final = "jensen-shannon-bits"
SLOTS: Final = 15
FRAME_S: Final = 0.02
_RMS_FLOOR: Final = 1e-10

# Bin edges the reference is built with; values beyond the outer edges count in the outer bins.
DEFAULT_EDGES: Final[dict[str, tuple[float, ...]]] = {
    "score": tuple(float(x) for x in range(-12, 13)),
    "level_dbfs": tuple(float(x) for x in range(-80, 1, 5)),
    "speech_share": tuple(round(0.1 * i, 1) for i in range(11)),
}


@dataclass(frozen=True)
class WindowFeatures:
    score: float
    level_dbfs: float
    speech_share: float
    speech: bool


def window_features(
    samples: NDArray[np.float32], sample_rate: int, score: float, speech: bool, speech_dbfs: float
) -> WindowFeatures:
    """The drift features of one scored window (``speech_dbfs``: the speech gate's level)."""
    audio = np.asarray(samples, dtype=np.float64)
    frame = max(1, round(FRAME_S * sample_rate))
    n = len(audio) // frame
    level = 20.0 * math.log10(
        max(math.sqrt(float(np.mean(np.square(audio)))) if len(audio) else 0.0, _RMS_FLOOR)
    )
    if n == 0:
        share = float(level > speech_dbfs)
    else:
        rms = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, frame)), axis=1))
        frame_db = 20.0 * np.log10(np.maximum(rms, _RMS_FLOOR))
        share = float(np.count_nonzero(frame_db > speech_dbfs)) / n
    return WindowFeatures(float(score), level, share, bool(speech))


def bin_index(edges: Sequence[float], value: float) -> int:
    """The bin of ``value`` among ``len(edges) - 1`` bins; outside values go to the outer bins."""
    i = int(np.searchsorted(np.asarray(edges), value, side="right")) - 1
    return min(max(i, 0), len(edges) - 2)


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) of two histograms
    (counts or probabilities, normalised here)."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two histograms of the same bins, found shapes {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any() or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("expected histograms of non-negative counts, each with some mass")
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: NDArray[np.float64]) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(1.0, max(0.0, 0.5 * kl(a) + 0.5 * kl(b)))


@dataclass(frozen=True)
class DriftReference:
    """Per feature: bin edges and the reference histogram (probabilities)."""

    edges: Mapping[str, tuple[float, ...]]
    probabilities: Mapping[str, NDArray[np.float64]]
    windows: int

    @classmethod
    def from_card(cls, card: Mapping[str, Any], spoof_share: float = 0.0) -> DriftReference | None:
        """The card's reference (None when it has none): the bona fide histograms, mixed
        with ``spoof_share`` of the spoof ones (the share of synthetic calls expected)."""
        section = card.get(CARD_KEY)
        if section is None:
            return None
        if not 0.0 <= spoof_share <= 1.0:
            raise ConfigError(
                f"engine.drift_spoof_share: expected a fraction in [0, 1], found {spoof_share!r}"
            )
        try:
            edges: dict[str, tuple[float, ...]] = {}
            probabilities: dict[str, NDArray[np.float64]] = {}
            for name in FEATURES:
                feature = section["features"][name]
                edges[name] = tuple(float(x) for x in feature["edges"])
                mixed = np.zeros(len(edges[name]) - 1)
                for label, weight in (("bonafide", 1.0 - spoof_share), ("spoof", spoof_share)):
                    counts = np.asarray(feature[label], dtype=np.float64)
                    if counts.shape != mixed.shape or (counts < 0).any():
                        raise ValueError(f"{name}.{label}: expected {len(mixed)} counts >= 0")
                    if weight > 0:
                        if counts.sum() <= 0:
                            raise ValueError(f"{name}.{label}: expected some windows, found none")
                        mixed += weight * counts / counts.sum()
                probabilities[name] = mixed
            windows = int(sum(section["windows"].values()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model card {CARD_KEY}: malformed ({exc!r})") from None
        return cls(edges, probabilities, windows)


def reference_section(
    features: Sequence[WindowFeatures],
    labels: Sequence[str],
    *,
    edges: Mapping[str, tuple[float, ...]] = DEFAULT_EDGES,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card's ``drift_reference`` section from windows scored with their labels
    (``bonafide``/``spoof``), histogrammed as the monitor does."""
    if len(features) != len(labels):
        raise ValueError(f"expected one label per window, found {len(labels)} for {len(features)}")
    section: dict[str, Any] = {"statistic": STATISTIC, "features": {}, "windows": {}}
    for label in ("bonafide", "spoof"):
        section["windows"][label] = sum(1 for x in labels if x == label)
    for name in FEATURES:
        entry: dict[str, Any] = {"edges": list(edges[name])}
        for label in ("bonafide", "spoof"):
            counts = [0] * (len(edges[name]) - 1)
            for f, lab in zip(features, labels, strict=True):
                if lab == label and (name == "speech_share" or f.speech):
                    counts[bin_index(edges[name], getattr(f, name))] += 1
            entry[label] = counts
        section["features"][name] = entry
    if source:
        section["source"] = dict(source)
    return section


class SlidingHistograms:
    """Histograms of the last ``window_s`` seconds, kept in ``slots`` time slots."""

    def __init__(self, edges: Mapping[str, tuple[float, ...]], window_s: float, slots: int = SLOTS) -> None:
        self.edges = dict(edges)
        self.slot_s = window_s / slots
        self.slots = slots
        self._counts = {n: np.zeros((slots, len(e) - 1), dtype=np.int64) for n, e in self.edges.items()}
        self._windows = np.zeros(slots, dtype=np.int64)
        self._slot_of: int | None = None  # absolute slot number of the newest slot

    def _advance(self, now: float) -> int:
        current = math.floor(now / self.slot_s)
        if self._slot_of is not None:
            for stale in range(self._slot_of + 1, min(current, self._slot_of + self.slots) + 1):
                index = stale % self.slots
                self._windows[index] = 0
                for counts in self._counts.values():
                    counts[index] = 0
        self._slot_of = current if self._slot_of is None else max(current, self._slot_of)
        return current % self.slots

    def add(self, now: float, features: WindowFeatures) -> None:
        index = self._advance(now)
        self._windows[index] += 1
        for name, counts in self._counts.items():
            if name == "speech_share" or features.speech:
                counts[index, bin_index(self.edges[name], getattr(features, name))] += 1

    def totals(self, now: float) -> tuple[int, dict[str, NDArray[np.int64]]]:
        self._advance(now)
        return int(self._windows.sum()), {n: c.sum(axis=0) for n, c in self._counts.items()}


class DriftMonitor:
    """Compares the node's recent windows with the card's reference; see the module doc."""

    def __init__(
        self,
        reference: DriftReference,
        node: str,
        *,
        window_s: float = 900.0,
        threshold: float = 0.1,
        min_windows: int = 300,
        rearm: float = 0.7,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ConfigError(f"engine.drift_window_s: expected seconds > 0, found {window_s!r}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"engine.drift_threshold: expected bits in (0, 1], found {threshold!r}")
        if min_windows < 1:
            raise ConfigError(f"engine.drift_min_windows: expected at least 1, found {min_windows!r}")
        if not 0.0 <= rearm < 1.0:
            raise ValueError(f"rearm: expected a fraction in [0, 1), found {rearm!r}")
        self.reference = reference
        self.node = node
        self.window_s = window_s
        self.threshold = threshold
        self.min_windows = min_windows
        self.rearm = rearm
        self.clock = clock
        self.histograms = SlidingHistograms(reference.edges, window_s)
        self.on = False
        self.windows = 0
        self.divergence: dict[str, float] = dict.fromkeys(FEATURES, 0.0)
        self.events = 0
        self.paused = ""  # why the alarms are off (restart(None, why)); "" while they are on

    def restart(self, reference: DriftReference | None, why: str = "") -> DriftEvent | None:
        """Start over against ``reference`` (a hot reload's new card: the old card's scores
        are not comparable); None pauses the alarms, ``why`` says why. The event to publish:
        ``paused`` with ``why``, or ``off`` when an alarm that was on (or paused) is cleared
        by the restart, else None."""
        was_on, was_paused = self.on, bool(self.paused)
        if reference is not None:
            self.reference = reference
        self.histograms = SlidingHistograms(self.reference.edges, self.window_s)
        self.paused = why if reference is None else ""
        self.on = False
        self.windows = 0
        self.divergence = dict.fromkeys(FEATURES, 0.0)
        if self.paused:
            self.events += 1
            return self.event(state="paused", reason=self.paused)
        if was_on or was_paused:
            self.events += 1
            return self.event(reason="restarted against a new detector's reference")
        return None

    @property
    def statistic(self) -> float:
        return max(self.divergence.values())

    def measure(self) -> float:
        """Recompute the divergences over the current period; the statistic (0 while
        paused)."""
        if self.paused:
            return self.statistic
        self.windows, totals = self.histograms.totals(self.clock())
        for name in FEATURES:
            counts = totals[name]
            self.divergence[name] = (
                js_divergence(counts, self.reference.probabilities[name]) if counts.sum() > 0 else 0.0
            )
        return self.statistic

    def observe(self, features: WindowFeatures) -> DriftEvent | None:
        """Count one scored window; the drift event to publish, if the state changed."""
        if self.paused:
            return None
        self.histograms.add(self.clock(), features)
        statistic = self.measure()
        if not self.on and self.windows >= self.min_windows and statistic > self.threshold:
            self.on = True
        elif self.on and statistic < self.rearm * self.threshold:
            self.on = False
        else:
            return None
        self.events += 1
        return self.event()

    def event(self, state: Literal["on", "off", "paused"] | None = None, reason: str = "") -> DriftEvent:
        """The monitor's state as an event (``state`` overrides on/off)."""
        return DriftEvent(
            node=self.node,
            state=state or ("on" if self.on else "off"),
            statistic=self.statistic,
            threshold=self.threshold,
            windows=self.windows,
            window_s=self.window_s,
            score_divergence=self.divergence["score"],
            level_divergence=self.divergence["level_dbfs"],
            speech_divergence=self.divergence["speech_share"],
            reason=reason,
        )


def detector_identity(card: Mapping[str, Any]) -> str:
    """Which trained detector a card is: its name and when it was trained (a retrained card
    of the same name scores differently)."""
    return f"{card.get('name', '')} ({card.get('created', '')})"


def node_reference(path: str | Path, card: Mapping[str, Any], spoof_share: float = 0.0) -> DriftReference:
    """The reference in ``path`` (``engine.drift_reference``: a ``drift_reference`` section,
    as ``scripts/drift_reference.py --out`` writes it), refused unless it was made with the
    detector ``card`` describes (scores of another detector are not comparable)."""
    where = f"engine.drift_reference {str(path)!r}"
    try:
        section = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: expected a readable JSON file ({exc})") from None
    if not isinstance(section, dict) or "features" not in section:
        raise ConfigError(f"{where}: expected a drift_reference section (scripts/drift_reference.py --out)")
    source = section.get("source")
    made_with = str(source.get("detector", "")) if isinstance(source, dict) else ""
    if made_with != detector_identity(card):
        raise ConfigError(
            f"{where}: made with detector {made_with or 'unknown'!r}, but this node runs "
            f"{detector_identity(card)!r}; remake it with scripts/drift_reference.py --out"
        )
    try:
        reference = DriftReference.from_card({CARD_KEY: section}, spoof_share)
    except ModelError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    assert reference is not None
    return reference


def reference_for(card: Mapping[str, Any], engine: EngineConfig) -> DriftReference | None:
    """What a node on ``card`` compares with: ``engine.drift_reference``'s file, else the
    card's reference (None when it has none)."""
    if engine.drift_reference:
        return node_reference(engine.drift_reference, card, engine.drift_spoof_share)
    return DriftReference.from_card(card, engine.drift_spoof_share)


def drift_monitor_for(pipeline: Pipeline, engine: EngineConfig) -> DriftMonitor | None:
    """A monitor watching ``pipeline``'s scored windows and publishing its drift events on
    the pipeline's hub; None when ``engine.drift_threshold`` is 0 or there is no reference
    (``engine.drift_reference``'s file, else the detector card's)."""
    if engine.drift_threshold == 0:
        return None
    reference = reference_for(getattr(pipeline.scorer, "card", None) or {}, engine)
    if reference is None:
        logger.info("drift alarms off: the detector card has no %s", CARD_KEY)
        return None
    monitor = DriftMonitor(
        reference,
        pipeline.node,
        window_s=engine.drift_window_s,
        threshold=engine.drift_threshold,
        min_windows=engine.drift_min_windows,
    )
    gate_dbfs = pipeline.stream_config.speech_threshold_dbfs
    against = "the node's reference" if engine.drift_reference else "the card's reference"

    def observe(_stream: StreamHandle, window: Window, score: float, speech: bool) -> None:
        features = window_features(window.samples, window.sample_rate, score, speech, gate_dbfs)
        event = monitor.observe(features)
        if event is not None:
            logger.warning(
                "drift %s: %.3f bits against %s (threshold %.3f, %d windows)",
                event.state,
                event.statistic,
                against,
                event.threshold,
                event.windows,
            )
            pipeline.hub.publish(event)

    def swapped(scorer: object) -> None:
        try:
            fresh = reference_for(getattr(scorer, "card", None) or {}, engine)
        except (ConfigError, ModelError) as exc:
            event = monitor.restart(None, str(exc))
        else:
            event = monitor.restart(fresh, f"the new card has no {CARD_KEY}")
        if event is not None:
            pipeline.hub.publish(event)
        if monitor.paused:
            logger.warning("drift alarms paused after the hot reload: %s", monitor.paused)
        else:
            logger.info("drift alarms restarted against %s, for the new card", against)

    pipeline.window_observers.append(observe)
    pipeline.scorer_observers.append(swapped)
    return monitor
