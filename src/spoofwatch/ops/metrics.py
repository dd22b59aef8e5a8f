"""Prometheus metrics of one server, in its own ``CollectorRegistry``.

Most values are read at scrape time from counters the engine keeps anyway (the batcher's,
the pipeline's live streams and refusals, the drift monitor, each webhook sink's
``counters()``), so scoring pays nothing for them. What only exists as events (streams
opened, alarms, errors, each window's scoring lag) is counted by a listener on the event
hub. A registry per server, not the global one, so several servers in one process (tests)
do not clash. Exposed at ``GET /metrics`` by ``spoofwatch.stream.net.metrics_http``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from spoofwatch.events import AlarmEvent, ErrorEvent, Event, ScoreEvent, StreamEvent

if TYPE_CHECKING:
    from spoofwatch.ops.drift import DriftMonitor
    from spoofwatch.stream.engine.pipeline import Pipeline

PREFIX: Final = "spoofwatch"
LAG_BUCKETS_S: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class DeliveryCounters(Protocol):
    """A webhook sink: per endpoint, counts named ``delivered``, ``retried``, ``dropped``,
    ``dropped_<reason>`` and ``queued`` (others are ignored)."""

    def counters(self) -> Mapping[str, Mapping[str, int]]: ...


def detector_identity(scorer: object) -> dict[str, str]:
    """Name, version, content hash and threshold of the scorer's detector card.

    The hash is SHA-256 of the card's JSON (sorted keys) without its ``inference``
    section, which says how this process runs the detector, not what the detector is; a
    card that states its own ``content_sha256`` is taken at its word."""
    card: Mapping[str, Any] = getattr(scorer, "card", None) or {}
    digest = card.get("content_sha256")
    if not isinstance(digest, str):
        body = {k: v for k, v in card.items() if k != "inference"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "name": str(card.get("name", type(scorer).__name__)),
        "version": str(card.get("version", card.get("created", "unknown"))),
        "sha256": digest,
        "threshold": f"{float(getattr(scorer, 'threshold', float('nan'))):g}",
    }


class _ScrapeCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        pipeline = m.pipeline
        batcher = pipeline.batcher
        by_source: dict[str, int] = {}
        for handle in list(pipeline.streams.values()):
            by_source[handle.source] = by_source.get(handle.source, 0) + 1
        open_streams = GaugeMetricFamily(
            f"{PREFIX}_streams_open", "Live streams by source.", labels=["source"]
        )
        for source, count in sorted(by_source.items()):
            open_streams.add_metric([source], count)
        yield open_streams
        yield GaugeMetricFamily(
            f"{PREFIX}_streams_max",
            "Admission limit on concurrent streams.",
            value=pipeline.engine_config.max_streams,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_windows_scored", "Windows scored by the engine.", value=batcher.counters.scored
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_windows", "Windows waiting to be scored.", value=batcher.queued
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_windows_dropped", "Windows never scored, by reason.", labels=["reason"]
        )
        counters = batcher.counters
        dropped.add_metric(["queue_full"], counters.dropped - counters.discarded)
        dropped.add_metric(["stream_ended"], counters.discarded)
        dropped.add_metric(["inference_failed"], counters.failed)
        yield dropped
        refused = CounterMetricFamily(
            f"{PREFIX}_refused", "Streams and calls refused at admission, by reason.", labels=["reason"]
        )
        for reason, count in sorted(pipeline.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            f"{PREFIX}_event_subscribers",
            "Event subscribers (WebSocket, MQTT, ...).",
            value=pipeline.hub.subscriber_count,
        )
        yield InfoMetricFamily(
            f"{PREFIX}_detector", "The detector scoring now.", value=detector_identity(pipeline.scorer)
        )
        yield from self._webhooks()
        if m.drift is not None:
            yield from self._drift(m.drift)

    def _webhooks(self) -> Iterable[Metric]:
        deliveries = CounterMetricFamily(
            f"{PREFIX}_webhook_deliveries",
            "Webhook deliveries by endpoint and outcome.",
            labels=["endpoint", "outcome"],
        )
        drops = CounterMetricFamily(
            f"{PREFIX}_webhook_dropped",
            "Webhook events lost, by endpoint and reason.",
            labels=["endpoint", "reason"],
        )
        queued = GaugeMetricFamily(f"{PREFIX}_webhook_queued", "Webhook events waiting.", labels=["endpoint"])
        for sink in self.metrics.webhooks:
            for endpoint, values in sorted(sink.counters().items()):
                for key, value in sorted(values.items()):
                    if key in ("delivered", "retried", "dropped"):
                        deliveries.add_metric([endpoint, key], value)
                    elif key.startswith("dropped_"):
                        drops.add_metric([endpoint, key.removeprefix("dropped_")], value)
                    elif key == "queued":
                        queued.add_metric([endpoint], value)
        yield deliveries
        yield drops
        yield queued

    def _drift(self, drift: DriftMonitor) -> Iterable[Metric]:
        drift.measure()
        yield GaugeMetricFamily(
            f"{PREFIX}_drift_statistic",
            "Largest Jensen-Shannon divergence (bits) of recent windows from the card's reference.",
            value=drift.statistic,
        )
        per_feature = GaugeMetricFamily(
            f"{PREFIX}_drift_divergence", "Jensen-Shannon divergence (bits) per feature.", labels=["feature"]
        )
        for feature, value in drift.divergence.items():
            per_feature.add_metric([feature], value)
        yield per_feature
        yield GaugeMetricFamily(
            f"{PREFIX}_drift_threshold", "Drift alarm threshold (bits).", value=drift.threshold
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_drift_windows", "Windows in the drift period.", value=drift.windows
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_drift_active", "1 while the drift alarm is on.", value=int(drift.on)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_drift_paused",
            "1 while drift alarms are paused (a hot reload to a card the reference does not fit).",
            value=int(bool(drift.paused)),
        )


class ServerMetrics:
    """The metrics of one pipeline (and its drift monitor and webhook sinks, if any)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        drift: DriftMonitor | None = None,
        webhooks: Sequence[DeliveryCounters] = (),
    ) -> None:
        self.pipeline = pipeline
        self.drift = drift
        self.webhooks = list(webhooks)
        self.registry = CollectorRegistry(auto_describe=False)
        self.opened = Counter(
            f"{PREFIX}_streams_opened", "Streams opened, by source.", ["source"], registry=self.registry
        )
        self.alarms = Counter(f"{PREFIX}_alarms", "Alarms raised (on transitions).", registry=self.registry)
        self.errors = Counter(f"{PREFIX}_errors", "Error events, by code.", ["code"], registry=self.registry)
        self.lag = Histogram(
            f"{PREFIX}_scoring_lag_seconds",
            "From a window's last sample to its score being published.",
            buckets=LAG_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_ScrapeCollector(self))
        pipeline.hub.add_listener(self.on_event)

    def add_webhooks(self, sink: DeliveryCounters) -> None:
        self.webhooks.append(sink)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ScoreEvent):
            self.lag.observe(max(0.0, event.lag_ms) / 1000.0)
        elif isinstance(event, StreamEvent) and event.state == "start":
            self.opened.labels(event.source).inc()
        elif isinstance(event, AlarmEvent) and event.state == "on":
            self.alarms.inc()
        elif isinstance(event, ErrorEvent):
            self.errors.labels(event.code).inc()
