"""``spoofwatch bench --compare-scorers`` and ``--pool-replicas``: the same real-time search
with the local detector and with the inference pool (``--scorer ray``), in one process
one after the other, so the remote hop's cost is a ratio measured under one load; and the
pool at several replica counts (each redeployed before its run).

The pool's work is done by its replicas, outside this process: the CPU-time figures of a
ray run count only the ingest side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spoofwatch.config import EngineConfig, StreamConfig
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.ops.bench import BenchOptions, BenchReport, Progress, run_bench

ScorerFactory = Callable[[], WindowScorer]


@dataclass
class ScorerRun:
    """One scorer's report: ``label`` ``local``, ``ray`` or ``ray-N`` (N replicas)."""

    label: str
    report: BenchReport


def compare(runs: Sequence[ScorerRun]) -> dict[str, Any]:
    """Each run's headline, and each run's real-time streams and p99 lag relative to the
    first run's (the local baseline)."""
    base = runs[0].report
    table: dict[str, Any] = {}
    for run in runs:
        report = run.report
        entry: dict[str, Any] = {
            "max_realtime_streams": report.max_realtime_streams,
            "p99_latency_ms": report.p99_latency_ms,
            "streams": report.streams,
            "windows_per_s": report.windows_per_s,
            "ms_per_window": report.ms_per_window,
        }
        if run is not runs[0] and base.max_realtime_streams and report.max_realtime_streams is not None:
            entry["streams_vs_first"] = report.max_realtime_streams / base.max_realtime_streams
        if run is not runs[0] and base.p99_latency_ms and report.p99_latency_ms is not None:
            entry["p99_vs_first"] = report.p99_latency_ms / base.p99_latency_ms
        table[run.label] = entry
    return table


def run_scorers(
    scorers: Sequence[tuple[str, ScorerFactory]],
    stream_config: StreamConfig,
    engine_config: EngineConfig,
    options: BenchOptions,
    progress: Progress | None = None,
) -> list[ScorerRun]:
    """``run_bench`` for each (label, factory), in order; a factory may redeploy the pool."""
    runs: list[ScorerRun] = []
    for label, factory in scorers:
        if progress:
            progress(f"--- scorer {label} ---")
        scorer = factory()
        runs.append(ScorerRun(label, run_bench(scorer, stream_config, engine_config, options, progress)))
    return runs


def format_comparison(table: dict[str, Any]) -> str:
    lines = []
    for label, entry in table.items():
        line = (
            f"{label:>8}: max real-time streams {entry['max_realtime_streams']}, "
            f"p99 lag {entry['p99_latency_ms']:.0f} ms at {entry['streams']} streams, "
            f"{entry['ms_per_window']:.0f} ms per lone window"
        )
        if "streams_vs_first" in entry:
            line += f"  (streams x{entry['streams_vs_first']:.2f} of the first"
            line += f", p99 x{entry['p99_vs_first']:.2f})" if "p99_vs_first" in entry else ")"
        lines.append(line)
    return "\n".join(lines)
