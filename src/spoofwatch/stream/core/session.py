"""One stream's state: windower, smoother, hysteresis and speech gate. Pure, no I/O.

The session turns audio into windows to score, and window scores into events. It keeps
no reference to the model; the shared engine scores its windows and hands them back in
order.

Gaps (``gap``): no sample is invented for audio that never arrived. A gap up to
``gap_tolerance_s`` (1 s) is spliced (the audio either side joins, the clock skips it)
and a window with more than that spliced out in total is not scored; a longer gap
restarts windowing after it, so no window spans it. Scores and alarms keep the stream's clock (samples
received plus gaps, see ``gaps.Timeline``); the smoother and the alarm simply see no
window during a gap and so keep their state across it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from spoofwatch.config import StreamConfig
from spoofwatch.events import AlarmEvent, Event, GapEvent, ScoreEvent, WindowScore
from spoofwatch.model.card_label import CardLabel
from spoofwatch.stream.core.gaps import GAP_CAUSES, SPLICED_CAUSES, Timeline
from spoofwatch.stream.core.smoothing import Hysteresis, LlrSmoother, p_spoof_from_llr
from spoofwatch.stream.core.speech import EnergySpeechGate
from spoofwatch.stream.core.windowing import Window, WindowConfig, Windower

# Gaps longer than this are published as gap events; shorter ones (a lost packet or two)
# are only counted, so packet loss cannot flood subscribers.
REPORTED_GAP_S = 0.1


@dataclass
class SessionCounters:
    samples_in: int = 0
    windows_out: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0
    windows_skipped_gap: int = 0  # more than gap_tolerance_s spliced out: not scored
    alarms: int = 0
    gaps: int = 0
    gap_samples: int = 0  # on the stream's clock
    gap_samples_over_cap: int = 0  # beyond gap_max_total_s: the clock fell behind


class StreamSession:
    """Per-stream state machine at the model's sample rate."""

    def __init__(self, stream_id: str, sample_rate: int, config: StreamConfig) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.config = config
        self.windower = Windower(WindowConfig(sample_rate, config.window_s, config.hop_s, config.min_s))
        self.smoother = LlrSmoother(config.smoothing, config.smoothing_n, config.smoothing_alpha)  # type: ignore[arg-type]
        alarm_on, alarm_off = config.alarm_levels()
        self.alarm = Hysteresis(alarm_on, alarm_off, config.alarm_min_on_s)
        self.gate = EnergySpeechGate(
            config.speech_threshold_dbfs, min_speech_fraction=config.speech_min_fraction
        )
        self.counters = SessionCounters()
        self.timeline = Timeline()
        self.gap_tolerance_samples = round(config.gap_tolerance_s * sample_rate)
        self.gap_cap_samples = round(config.gap_max_total_s * sample_rate)
        self.report_samples = round(REPORTED_GAP_S * sample_rate)
        self._seq = 0
        self._smoothed_p = 0.5
        # The speech windows the smoother holds: an alarm carries them as its evidence.
        self._recent: deque[WindowScore] = deque(maxlen=max(1, config.smoothing_n))

    def feed(self, samples: NDArray[np.float32]) -> list[Window]:
        """Audio in (mono, model rate); windows ready to score out."""
        self.counters.samples_in += len(samples)
        self.timeline.add_audio(len(samples))
        return self._placed(self.windower.feed(samples))

    def finish(self) -> list[Window]:
        """End of stream: a last (tiled) window if the stream never filled one."""
        return self._placed(self.windower.flush())

    def gap(self, n_samples: int, cause: str) -> GapEvent | None:
        """``n_samples`` of the stream's clock passed with no audio; the event to publish
        for a gap longer than ``REPORTED_GAP_S``, else None (counted only)."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
            raise ValueError(f"gap: expected a number of samples >= 0, got {n_samples!r}")
        if cause not in GAP_CAUSES:
            raise ValueError(f"gap cause: expected one of {list(GAP_CAUSES)}, got {cause!r}")
        credit = min(n_samples, max(0, self.gap_cap_samples - self.counters.gap_samples))
        start = self.timeline.now
        spliced = cause in SPLICED_CAUSES
        self.timeline.add_gap(credit, counted=not spliced)
        self.counters.gaps += 1
        self.counters.gap_samples += credit
        self.counters.gap_samples_over_cap += n_samples - credit
        if n_samples > self.gap_tolerance_samples and not spliced:
            self.windower.restart()
        if n_samples <= self.report_samples:
            return None
        return GapEvent(self.stream_id, start / self.sample_rate, (start + credit) / self.sample_rate, cause)

    def _placed(self, windows: list[Window]) -> list[Window]:
        """Windows on the stream's clock; those with too much spliced out are dropped."""
        if self.timeline.has_gaps:
            placed: list[Window] = []
            for window in windows:
                end = window.start_sample + window.covered_samples
                start_t, end_t, spliced = self.timeline.span(window.start_sample, end)
                if spliced > self.gap_tolerance_samples:
                    self.counters.windows_skipped_gap += 1
                    continue
                placed.append(replace(window, timeline=(start_t, end_t)))
            self.timeline.forget_before(self.windower.next_start)
            windows = placed
        self.counters.windows_out += len(windows)
        return windows

    def is_speech(self, window: Window) -> bool:
        return self.gate.is_speech(window.samples, window.sample_rate)

    def on_score(
        self, window: Window, llr: float, speech: bool, lag_ms: float, card: CardLabel | None = None
    ) -> list[Event]:
        """A scored window in; its score event and any alarm transition out, naming
        ``card``, the card that scored it.

        Non-speech windows are reported but do not move the smoother or the alarm, so
        silence cannot raise or clear an alarm on its own.
        """
        name, sha = (None, None) if card is None else (card.name, card.short)
        self.counters.windows_scored += 1
        p_spoof = p_spoof_from_llr(llr)
        events: list[Event] = []
        transition = None
        if speech:
            self._recent.append(WindowScore(window.t_start, window.t_end, float(llr)))
            self._smoothed_p = p_spoof_from_llr(self.smoother.feed(llr))
            transition = self.alarm.feed(self._smoothed_p, window.t_end)
        events.append(
            ScoreEvent(
                stream=self.stream_id,
                seq=self._seq,
                t_start=window.t_start,
                t_end=window.t_end,
                score=float(llr),
                p_spoof=p_spoof,
                smoothed=self._smoothed_p,
                speech=speech,
                lag_ms=lag_ms,
                detector=name,
                detector_sha=sha,
            )
        )
        self._seq += 1
        if transition is not None:
            self.counters.alarms += transition == "on"
            events.append(
                AlarmEvent(
                    stream=self.stream_id,
                    state=transition,
                    t=window.t_end,
                    p_spoof=self._smoothed_p,
                    evidence_scores=tuple(self._recent),
                    detector=name,
                    detector_sha=sha,
                )
            )
        return events

    def close_alarm(self, t: float, card: CardLabel | None = None) -> list[Event]:
        """At stream end an alarm that is on is reported off (naming the card serving)."""
        if self.alarm.state == "on":
            name, sha = (None, None) if card is None else (card.name, card.short)
            return [AlarmEvent(self.stream_id, "off", t, self._smoothed_p, detector=name, detector_sha=sha)]
        return []

    @property
    def duration_s(self) -> float:
        """The stream's clock: audio received plus gaps."""
        return self.timeline.now / self.sample_rate
