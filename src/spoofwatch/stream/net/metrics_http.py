"""``GET /metrics``: the server's Prometheus metrics (``spoofwatch.ops.metrics``) in the
text exposition format. The server's token applies, as on every other path."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spoofwatch.ops.metrics import ServerMetrics

METRICS_PATH = "/metrics"


def metrics_routes(metrics: ServerMetrics) -> list[web.RouteDef]:
    async def handle(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get(METRICS_PATH, handle)]
