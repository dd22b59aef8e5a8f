"""One stream's state: windower, smoother, hysteresis and speech gate. Pure, no I/O.

The session turns audio into windows to score, and window scores into events. It keeps
no reference to the model; the shared engine scores its windows and hands them back in
order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spoofwatch.config import StreamConfig
from spoofwatch.events import AlarmEvent, Event, ScoreEvent
from spoofwatch.stream.core.smoothing import Hysteresis, LlrSmoother, p_spoof_from_llr
from spoofwatch.stream.core.speech import EnergySpeechGate
from spoofwatch.stream.core.windowing import Window, WindowConfig, Windower


@dataclass
class SessionCounters:
    samples_in: int = 0
    windows_out: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0
    alarms: int = 0


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
        self._seq = 0
        self._smoothed_p = 0.5

    def feed(self, samples: NDArray[np.float32]) -> list[Window]:
        """Audio in (mono, model rate); windows ready to score out."""
        self.counters.samples_in += len(samples)
        windows = self.windower.feed(samples)
        self.counters.windows_out += len(windows)
        return windows

    def finish(self) -> list[Window]:
        """End of stream: a last (tiled) window if the stream never filled one."""
        windows = self.windower.flush()
        self.counters.windows_out += len(windows)
        return windows

    def is_speech(self, window: Window) -> bool:
        return self.gate.is_speech(window.samples, window.sample_rate)

    def on_score(self, window: Window, llr: float, speech: bool, lag_ms: float) -> list[Event]:
        """A scored window in; its score event and any alarm transition out.

        Non-speech windows are reported but do not move the smoother or the alarm, so
        silence cannot raise or clear an alarm on its own.
        """
        self.counters.windows_scored += 1
        p_spoof = p_spoof_from_llr(llr)
        events: list[Event] = []
        transition = None
        if speech:
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
            )
        )
        self._seq += 1
        if transition is not None:
            self.counters.alarms += transition == "on"
            events.append(
                AlarmEvent(stream=self.stream_id, state=transition, t=window.t_end, p_spoof=self._smoothed_p)
            )
        return events

    def close_alarm(self, t: float) -> list[Event]:
        """At stream end an alarm that is on is reported off."""
        if self.alarm.state == "on":
            return [AlarmEvent(stream=self.stream_id, state="off", t=t, p_spoof=self._smoothed_p)]
        return []

    @property
    def duration_s(self) -> float:
        return self.counters.samples_in / self.sample_rate
