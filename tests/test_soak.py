"""``spoofwatch soak`` with FakeScorer for a few seconds: both transports, report, CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json

import pytest

from fakes import FakeScorer
from spoofwatch import cli
from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.errors import ConfigError
from spoofwatch.ops.soak import MemorySample, SoakOptions, memory_growth, run_soak

pytestmark = pytest.mark.slow

STREAM = StreamConfig(window_s=1.0, hop_s=0.5)
ENGINE = EngineConfig(max_batch=8, max_wait_ms=5)
QUICK = SoakOptions(sample_every_s=0.25, call_s=(1.0, 1.4), chunk_ms=40.0)


@pytest.mark.parametrize("transport", ["websocket", "pipeline"])
def test_short_soak_scores_every_call_and_leaves_nothing_behind(transport: str) -> None:
    options = SoakOptions(**{**QUICK.__dict__, "transport": transport})
    report = asyncio.run(
        run_soak(
            FakeScorer(window_s=1.0),
            minutes=0.04,
            streams=3,
            stream_config=STREAM,
            engine_config=ENGINE,
            options=options,
        )
    )
    assert report.transport == transport and report.streams == 3
    assert report.calls_started == report.calls_completed >= 3 * 2  # 2.4 s of 1-1.4 s calls per slot
    assert report.windows_scored > 0 and report.windows_dropped == 0 and report.windows_failed == 0
    assert report.error_events == {}
    assert 0 < report.p50_lag_ms <= report.p99_lag_ms <= report.max_lag_ms < 1000
    assert report.live_streams_at_end == 0 and report.tasks_left_over == 0
    assert len(report.samples) >= 9 and report.samples[0].t_s == 0.0
    assert report.samples[-1].windows_scored == report.windows_scored
    assert report.rss_peak_mb >= max(report.rss_start_mb, report.rss_end_mb) > 0
    assert json.loads(json.dumps(report.to_dict()))["setup"]["scorer"] == "FakeScorer"


def test_memory_growth_is_the_slope_after_warm_up() -> None:
    def sample(t: float, rss: float) -> MemorySample:
        return MemorySample(t, rss, 0, 0, 0, 0)

    # 100 MB of warm-up, then 1 MB per 360 s (10 MB/h) on a 200 MB base.
    samples = [sample(0.0, 100.0)] + [sample(t, 200.0 + (t - 360.0) / 360.0) for t in range(360, 3601, 360)]
    grown, per_hour, pct = memory_growth(samples, warmup_fraction=0.1)
    assert grown == pytest.approx(9.0)
    assert per_hour == pytest.approx(10.0)
    assert pct == pytest.approx(5.0)
    flat = [sample(t, 300.0) for t in range(0, 600, 60)]
    assert memory_growth(flat, 0.1) == (0.0, pytest.approx(0.0), pytest.approx(0.0))


def test_options_are_validated() -> None:
    for bad in ({"minutes": 0}, {"streams": 0}, {"call_s": (5.0, 1.0)}, {"transport": "carrier-pigeon"}):
        with pytest.raises(ConfigError):
            SoakOptions(**bad)  # type: ignore[arg-type]


def test_cli_runs_a_soak_and_prints_one_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_load_soak_scorer", lambda args, engine: FakeScorer(window_s=1.0))
    parser = argparse.ArgumentParser()
    cli.add_soak_arguments(parser)
    args = parser.parse_args(
        ["--minutes", "0.03", "--streams", "2", "--sample-s", "0.5", "--call-s", "0.8,1", "--json"]
    )
    out = io.StringIO()
    # FakeScorer has no detector settings: the window comes from StreamConfig's default (4 s),
    # longer than these calls, so each call ends with one tiled window.
    status = cli.cmd_soak(args, out)
    report = json.loads(out.getvalue().splitlines()[-1])
    assert report["streams"] == 2 and report["calls_completed"] >= 2
    assert report["windows_scored"] > 0 and report["windows_dropped"] == 0
    assert report["live_streams_at_end"] == 0 and report["tasks_left_over"] == 0
    assert status == (0 if report["memory_flat"] else 1)
    with pytest.raises(ConfigError, match="MIN,MAX"):
        cli._parse_call_s("ten")
