"""SIPREC end to end: the real SIPp (``sip-tester``) runs ``examples/siprec/siprec_uac.xml``
against a ``SiprecServer``, and ``examples/siprec/siprec_call.py`` sends two parties'
speech as PCMU RTP: the agent real throughout, the caller real and then eSpeak.

The fast test scores with ``ZcrScorer``, a stand-in that calls a window synthetic by its
zero-crossing rate (the eSpeak clip crosses zero two to three times as often as the
LibriSpeech one, after telephone coding); the slow one with the real shipped detector.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fakes import FakeScorer
from siprec_kit import drain, siprec_recorder
from spoofwatch.config import StreamConfig
from spoofwatch.events import AlarmEvent, ErrorEvent, Event, ScoreEvent, StreamEvent
from spoofwatch.model.scorer import WindowScorer
from waits import scaled

REPO = Path(__file__).resolve().parents[2]
CALLER = "+15551230001@caller.example.com"
AGENT = "agent42@contact-centre.example.com"
SWITCH_S = 10.0  # the real clip is 10 s long; the caller turns synthetic there
CFG = StreamConfig(window_s=1.0, hop_s=0.5, alarm_min_on_s=0.5, smoothing_n=2)

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed")


class ZcrScorer(FakeScorer):
    """Bona fide below a zero-crossing rate of 0.095 per sample, synthetic above."""

    def score_windows(self, windows: NDArray[np.float32]) -> NDArray[np.float64]:
        self.calls.append(len(windows))
        crossings = np.mean(np.abs(np.diff(np.sign(windows), axis=1)) > 0, axis=1)
        return (60.0 * (0.095 - crossings)).astype(np.float64)


def load_example() -> ModuleType:
    path = REPO / "examples" / "siprec" / "siprec_call.py"
    spec = importlib.util.spec_from_file_location("example_siprec_call", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def recorder(scorer: WindowScorer, config: StreamConfig = CFG) -> Any:
    return siprec_recorder(scorer, config, rtp_ports=(31000, 31999), max_packets_per_s=2000)


async def recorded_call(
    scorer: WindowScorer, speed: float, config: StreamConfig = CFG
) -> tuple[dict[str, Any], list[Event]]:
    example = load_example()
    async with recorder(scorer, config) as (server, sub):
        summary = await example.run_call(
            f"127.0.0.1:{server.port}", [[example.REAL, example.SYNTHETIC], [example.REAL]], speed=speed
        )
        async with asyncio.timeout(scaled(30)):
            while server.sessions or server.pipeline.streams:
                await asyncio.sleep(0.05)
        return summary, drain(sub)


def by_party(events: list[Event]) -> dict[str, list[Event]]:
    parties: dict[str, list[Event]] = {}
    for event in events:
        stream = getattr(event, "stream", None)
        if stream is None:
            continue
        for party in (CALLER, AGENT):
            if stream.endswith(":" + party):
                parties.setdefault(party, []).append(event)
    return parties


def check_call(summary: dict[str, Any], events: list[Event], alarm_by_s: float) -> None:
    assert summary["sipp_status"] == 0, summary
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    parties = by_party(events)
    starts = {
        p: next(e for e in evs if isinstance(e, StreamEvent) and e.state == "start")
        for p, evs in parties.items()
    }
    assert starts[CALLER].metadata is not None and starts[CALLER].metadata["name"] == "Alice Caller"
    assert starts[CALLER].metadata["number"] == "+15551230001"
    assert starts[AGENT].metadata is not None and starts[AGENT].metadata["name"] == "Bob Agent"
    assert starts[CALLER].stream.split(":")[0] == starts[AGENT].stream.split(":")[0]  # the Call-ID
    for party in (CALLER, AGENT):
        assert [e.state for e in parties[party] if isinstance(e, StreamEvent)] == ["start", "end"]
    caller_scores = [e for e in parties[CALLER] if isinstance(e, ScoreEvent)]
    agent_scores = [e for e in parties[AGENT] if isinstance(e, ScoreEvent)]
    assert caller_scores[-1].t_end > 19.0 and agent_scores[-1].t_end > 9.0  # all of both was scored
    agent_alarms = [e for e in parties[AGENT] if isinstance(e, AlarmEvent)]
    assert not agent_alarms
    caller_on = [e for e in parties[CALLER] if isinstance(e, AlarmEvent) and e.state == "on"]
    assert caller_on, "the caller's switch to synthetic speech raised no alarm"
    assert SWITCH_S < caller_on[0].t <= SWITCH_S + alarm_by_s


def test_sipp_siprec_call_scores_both_parties_and_alarms_on_the_switch() -> None:
    summary, events = asyncio.run(recorded_call(ZcrScorer(16000, 1.0), speed=4.0))
    assert summary["packets_sent"] == [1038, 500]  # 20.77 s and 10 s in 20 ms packets
    check_call(summary, events, alarm_by_s=2.0)


@pytest.mark.slow
@pytest.mark.real_weights
def test_sipp_siprec_call_on_the_real_detector() -> None:
    from spoofwatch.model.artifact import load_detector

    detector = load_detector("default", num_threads=2)
    config = StreamConfig().with_alarm_levels(detector.threshold)
    summary, events = asyncio.run(recorded_call(detector, speed=1.5, config=config))
    check_call(summary, events, alarm_by_s=8.0)
