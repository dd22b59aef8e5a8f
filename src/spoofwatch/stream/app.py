"""Composition root of ``spoofwatch serve`` and ``spoofwatch listen``.

One ``asyncio.TaskGroup`` holds named tasks (inference worker, WebSocket server, sinks,
local sources); SIGINT/SIGTERM (or the ``stop`` event) close every live stream so its
last windows are scored and its end event published, then the tasks are cancelled.

``serve`` treats SIGTERM (what systemd, Kubernetes and ``docker stop`` send) as a drain
(``net.drain``): new calls are refused, live calls run to their end or until
``server.drain_timeout_s``, then the node stops as above. SIGINT (Ctrl-C) and a second
SIGTERM stop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp.web import AbstractRouteDef

from spoofwatch.config import Settings
from spoofwatch.events import ScorerEvent
from spoofwatch.model.card_label import CardLabel
from spoofwatch.model.scorer import WindowScorer
from spoofwatch.stream.engine.pipeline import Pipeline
from spoofwatch.stream.engine.reload import CardLoader

if TYPE_CHECKING:
    from aiohttp import web

    from spoofwatch.ops.metrics import ServerMetrics

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 0.5


def install_signal_handlers(
    stop: asyncio.Event, *, on_term: Callable[[], None] | None = None
) -> list[signal.Signals]:
    """SIGINT sets ``stop``; SIGTERM calls ``on_term`` when given (a drain), else sets ``stop``."""
    loop = asyncio.get_running_loop()
    installed = []
    handlers = {signal.SIGINT: stop.set, signal.SIGTERM: on_term or stop.set}
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    return installed


def remove_signal_handlers(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.remove_signal_handler(sig)


async def run_pipeline(
    pipeline: Pipeline,
    tasks: dict[str, Callable[[], Awaitable[None]]],
    stop: asyncio.Event,
    *,
    stop_when_done: set[str] | None = None,
) -> None:
    """Run ``tasks`` beside the inference worker until ``stop`` is set (or, if given,
    until every task named in ``stop_when_done`` has finished), then shut down."""
    async with asyncio.TaskGroup() as group:
        running = {"inference": group.create_task(pipeline.run(), name="inference")}
        for name, factory in tasks.items():
            running[name] = group.create_task(_logged(name, factory), name=name)
        waiters: list[asyncio.Task[object]] = [asyncio.create_task(_wait(stop), name="stop")]
        if stop_when_done:
            waiters.append(asyncio.create_task(_all_done([running[n] for n in stop_when_done])))
        _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        # Sources first: they close their own streams; then whatever else is live.
        sources = [t for name, t in running.items() if name == "listen" or name.startswith("source:")]
        for task in sources:
            task.cancel()
        await asyncio.gather(*sources, return_exceptions=True)
        logger.info("shutting down: closing %d live stream(s)", len(pipeline.streams))
        await pipeline.close_all()
        await asyncio.sleep(SHUTDOWN_GRACE_S)  # let sinks send the last events
        for task in running.values():
            task.cancel()


async def _all_done(tasks: list[asyncio.Task[None]]) -> object:
    return await asyncio.wait(tasks)


async def _wait(event: asyncio.Event) -> object:
    return await event.wait()


async def _logged(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """A failing source or sink is logged and ends alone; the server keeps serving."""
    try:
        await factory()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.error("task %s stopped: %s", name, exc, exc_info=logger.isEnabledFor(logging.DEBUG))


def publish_scorer_health(pipeline: Pipeline) -> None:
    """A remote scorer's changes of health (the inference pool lost or back) as ``scorer``
    events; the scorer reports them from an inference thread."""
    on_change = getattr(pipeline.scorer, "on_health_change", None)
    if on_change is None:
        return
    loop = asyncio.get_running_loop()

    def publish(health: dict[str, Any]) -> None:
        event = ScorerEvent(
            node=pipeline.node,
            pool=str(health.get("pool")),
            scoring=str(health.get("scoring")),
            message=str(health.get("last_error") or "") if health.get("pool") != "ok" else "",
        )
        loop.call_soon_threadsafe(pipeline.hub.publish, event)

    on_change(publish)


def build_tasks(
    pipeline: Pipeline,
    settings: Settings,
    *,
    websocket: bool = True,
    ready: asyncio.Event | None = None,
    extra_routes: Sequence[AbstractRouteDef] = (),
    metrics: ServerMetrics | None = None,
) -> dict[str, Callable[[], Awaitable[None]]]:
    from spoofwatch.stream.sources.spec import parse_source_spec, run_source

    server = settings.server
    tasks: dict[str, Callable[[], Awaitable[None]]] = {}
    if websocket:
        routes = [*evidence_http(pipeline, settings, tasks), *extra_routes]  # + /v1/streams, /v1/evidence
        if server.cluster_view:
            from spoofwatch.stream.net.cluster import cluster_relay_from_config, cluster_routes

            cluster = cluster_relay_from_config(server)  # no broker configured fails at start-up
            tasks["cluster-view"] = cluster.run
            routes += cluster_routes(cluster, pipeline.status)
        tasks["websocket"] = lambda: run_http_server(pipeline, settings, ready, routes)
        if server.audiosocket_port is not None:
            from spoofwatch.stream.net.audiosocket_server import run_audiosocket_server

            tasks["audiosocket"] = lambda: run_audiosocket_server(pipeline, server)
        if server.siprec_port is not None:
            from spoofwatch.stream.net.siprec_server import run_siprec_server, server_from_config

            server_from_config(pipeline, server)  # a bad range, allow-list or TLS file fails at start-up
            tasks["siprec"] = lambda: run_siprec_server(pipeline, server)
    if server.mqtt:
        from spoofwatch.stream.sinks.mqtt import mqtt_sink_from_config

        sink = mqtt_sink_from_config(pipeline.hub, server)  # a bad URL or CA file fails at start-up
        tasks["mqtt"] = sink.run
        from spoofwatch.stream.net.cluster import publish_status_every

        tasks["status"] = lambda: publish_status_every(
            pipeline.hub, pipeline.status
        )  # load, for cluster views
    if server.webhooks:
        from spoofwatch.stream.sinks.webhook import webhook_sink_from_config

        hooks = webhook_sink_from_config(pipeline.hub, server)  # a bad URL fails at start-up
        tasks["webhooks"] = hooks.run
        if metrics is not None:
            metrics.add_webhooks(hooks)
    if server.evidence_dir:
        from spoofwatch.stream.evidence.recorder import EvidenceRecorder
        from spoofwatch.stream.evidence.store import EvidenceStore

        store = EvidenceStore(server.evidence_dir, server.evidence_days)  # unwritable: fails at start-up
        recorder = EvidenceRecorder(
            pipeline.hub,
            store,
            pipeline.scorer.sample_rate,
            seconds=server.evidence_seconds,
            node=server.node,
        )
        pipeline.audio_taps.append(recorder.on_audio)
        tasks["evidence"] = recorder.run
    if server.jsonl:
        from spoofwatch.stream.sinks.jsonl import JsonlSink

        target = server.jsonl
        tasks["jsonl"] = lambda: JsonlSink(pipeline.hub, target).run()
    for spec_text in server.sources:
        spec = parse_source_spec(spec_text)
        tasks[f"source:{spec_text}"] = lambda spec=spec: run_source(pipeline, spec)  # type: ignore[misc]
    return tasks


def evidence_http(
    pipeline: Pipeline, settings: Settings, tasks: dict[str, Callable[[], Awaitable[None]]]
) -> list[web.RouteDef]:
    """``/v1/streams`` and ``/v1/evidence`` handlers for the server's ``extra_routes``; adds
    the live-stream tracker they read to ``tasks``."""
    from spoofwatch.stream.engine.snapshot import StreamTracker
    from spoofwatch.stream.evidence.store import EvidenceStore
    from spoofwatch.stream.net.evidence_http import evidence_routes, streams_routes

    server = settings.server
    tracker = StreamTracker(pipeline.hub, node=server.node)
    tasks["streams-snapshot"] = tracker.run
    store = EvidenceStore(server.evidence_dir, server.evidence_days) if server.evidence_dir else None
    return streams_routes(tracker) + evidence_routes(store)


async def run_http_server(
    pipeline: Pipeline,
    settings: Settings,
    ready: asyncio.Event | None = None,
    extra_routes: Sequence[web.AbstractRouteDef] = (),
) -> None:
    """The HTTP + WebSocket server with ``extra_routes`` and ``POST /v1/score``."""
    from spoofwatch.model.detector import Detector
    from spoofwatch.stream.net.rest_score import RestScorer, ScoreLimits
    from spoofwatch.stream.net.server import run_server

    server = settings.server
    routes = list(extra_routes)
    scorer = None
    if isinstance(pipeline.scorer, Detector):  # POST /v1/score shares the pipeline's detector
        scorer = RestScorer(pipeline.scorer, ScoreLimits.from_config(server), current=lambda: pipeline.scorer)
        routes += scorer.routes()
    try:
        await run_server(pipeline, server, ready, extra_routes=routes)
    finally:
        if scorer is not None:
            scorer.close()


async def serve(
    settings: Settings,
    scorer: WindowScorer,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    card: CardLabel | None = None,
    loader: CardLoader | None = None,
) -> None:
    """``spoofwatch serve``: WebSocket server, optional MQTT/JSONL sinks and local sources.
    ``card`` names ``scorer`` on events; ``loader`` loads cards for hot reload
    (stream.engine.reload; without it SIGHUP and the reload endpoint refuse)."""
    from spoofwatch.stream.learning import install_sighup, learning_parts, remove_sighup
    from spoofwatch.stream.net.drain import Drain

    stop = stop or asyncio.Event()
    drain = Drain(settings.server.drain_timeout_s)

    def on_term() -> None:
        if not drain.begin():  # a second SIGTERM: stop now
            stop.set()

    installed = install_signal_handlers(stop, on_term=on_term)
    try:
        pipeline = Pipeline(scorer, settings.stream, settings.engine, node=settings.server.node, card=card)
        learning = learning_parts(pipeline, settings, loader)
        install_sighup(learning)
        pipeline.drain = drain
        from spoofwatch.stream.net.admission import Admission

        Admission.of(pipeline)  # validates the admission settings at start-up, not at the first call
        publish_scorer_health(pipeline)
        from spoofwatch.ops.drift import drift_monitor_for
        from spoofwatch.ops.metrics import ServerMetrics
        from spoofwatch.stream.net.metrics_http import metrics_routes

        drift = drift_monitor_for(pipeline, settings.engine)  # a malformed card reference fails here
        metrics = ServerMetrics(pipeline, drift=drift)
        from spoofwatch.stream.net.tls import server_ssl_context

        if settings.server.tls_cert:
            server_ssl_context(settings.server.tls_cert, settings.server.tls_key)  # fail at start-up
        tasks = build_tasks(
            pipeline,
            settings,
            ready=ready,
            extra_routes=[*learning.routes, *metrics_routes(metrics)],
            metrics=metrics,
        )
        tasks.update(learning.tasks)
        tasks["drain"] = lambda: drain.run(pipeline, stop.set)
        await run_pipeline(pipeline, tasks, stop)
    finally:
        remove_sighup()
        remove_signal_handlers(installed)


async def listen(
    settings: Settings,
    scorer: WindowScorer,
    *,
    device: str | None = None,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """``spoofwatch listen``: live microphone alert in the terminal, optionally on MQTT."""
    from spoofwatch.stream.sinks.console import run_listen

    stop = stop or asyncio.Event()
    installed = install_signal_handlers(stop)
    try:
        pipeline = Pipeline(scorer, settings.stream, settings.engine, node=settings.server.node)
        from spoofwatch.ops.drift import drift_monitor_for

        drift_monitor_for(pipeline, settings.engine)
        tasks = build_tasks(pipeline, settings, websocket=False)
        mic = device if device is not None else None
        tasks["listen"] = lambda: run_listen(pipeline, mic, out=out, run_worker=False)
        await run_pipeline(pipeline, tasks, stop, stop_when_done={"listen"})
    finally:
        remove_signal_handlers(installed)
