"""POST hub events to HTTP endpoints (webhooks), signed, retried, never blocking scoring.

Each request carries one event, the same JSON as on the WebSocket and MQTT, and these
headers (docs/protocol.md, "Webhooks"):

- ``X-Spoofwatch-Timestamp``: Unix time in whole seconds when this attempt was sent.
- ``X-Spoofwatch-Signature``: ``sha256=`` + hex HMAC-SHA256, keyed with the webhook
  secret, of ``<timestamp> + "." + <body bytes>``; the timestamp is signed too, so a
  receiver that refuses old timestamps refuses replays. Absent when no secret is set.
- ``X-Spoofwatch-Delivery``: one id per event, the same across retries (deduplication).
- ``X-Spoofwatch-Event``: the event's type; ``X-Spoofwatch-Node``: the node's name.

Each endpoint has its own bounded queue (full: the oldest event is dropped and counted)
and one worker that sends events in order, so an endpoint's alarm on and off for a stream
arrive in the order they happened. A 2xx is delivered; 5xx, 408, 429, timeouts and
connection errors are retried with exponential backoff and full jitter (a ``Retry-After``
is honoured, up to a cap); any other answer is a refusal, counted and dropped. The hub
subscription keeps alarms when the sink falls behind, and publishing never waits on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError
from spoofwatch.events import Event, to_json
from spoofwatch.stream.engine.hub import EventHub

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Spoofwatch-Signature"
TIMESTAMP_HEADER: Final = "X-Spoofwatch-Timestamp"
DELIVERY_HEADER: Final = "X-Spoofwatch-Delivery"
EVENT_HEADER: Final = "X-Spoofwatch-Event"
NODE_HEADER: Final = "X-Spoofwatch-Node"
# Event types a webhook may carry; "all" is every one of them. Score events (one per
# window per stream) are for the WebSocket and MQTT, not one HTTP request each.
WEBHOOK_EVENT_TYPES: Final = ("alarm", "evidence", "stream", "gap", "error", "status")
RETRIED_STATUSES: Final = frozenset({408, 429})


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Spoofwatch-Signature`` value: ``sha256=<hex HMAC-SHA256(secret, "<ts>." + body)>``."""
    digest = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> str | None:
    """None if the headers sign ``body`` within ``tolerance_s`` of ``now``; else the reason."""
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return f"expected {TIMESTAMP_HEADER} as Unix seconds, found {timestamp!r}"
    if not signature or not signature.startswith("sha256="):
        return f"expected {SIGNATURE_HEADER}: sha256=<hex>, found {signature!r}"
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > tolerance_s:
        return f"expected a timestamp within {tolerance_s:g} s of now, found one {age:+.0f} s off"
    if not hmac.compare_digest(sign(secret, int(timestamp), body), signature):
        return "signature does not match the body and timestamp"
    return None


def full_jitter_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (0-based): uniform in [0, min(max_s, base_s * 2^attempt)]."""
    return rng.uniform(0.0, min(max_s, base_s * 2.0 ** min(attempt, 32)))


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def endpoint_display(url: str) -> str:
    """``scheme://host:port``: safe to log and to label metrics with (a path or query may
    hold a token, as many webhook URLs do)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


def check_webhook_url(url: str) -> str:
    """``url`` if it is an http:// or https:// URL with a host; else ConfigError."""
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(
            f"webhook: expected an http:// or https:// URL, found a malformed one ({exc})"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"webhook: expected an http:// or https:// URL, found scheme {parts.scheme!r}")
    if not host:
        raise ConfigError(f"webhook: expected a host in the URL, found none in {parts.scheme}://...")
    return url


def event_types(names: Iterable[str]) -> frozenset[str]:
    """The event types a sink sends, from config names (``all`` = every webhook type)."""
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(WEBHOOK_EVENT_TYPES)
        elif name in WEBHOOK_EVENT_TYPES:
            chosen.add(name)
        else:
            raise ConfigError(
                f"webhook events: expected 'all' or some of {list(WEBHOOK_EVENT_TYPES)}, found {name!r}"
            )
    if not chosen:
        raise ConfigError(f"webhook events: expected at least one of {list(WEBHOOK_EVENT_TYPES)}, found none")
    return frozenset(chosen)


@dataclass
class WebhookCounters:
    """One endpoint's deliveries; ``dropped`` is the sum of the three ways an event is lost."""

    delivered: int = 0
    retried: int = 0  # attempts after the first
    dropped_queue_full: int = 0  # the oldest queued event, pushed out by a newer one
    dropped_refused: int = 0  # a 4xx (not 408/429) or 3xx answer
    dropped_gave_up: int = 0  # still failing after max_attempts

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_refused + self.dropped_gave_up

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 0.5
    max_s: float = 60.0
    max_retry_after_s: float = 300.0  # a longer Retry-After is cut to this

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not 0 < self.base_s <= self.max_s or self.max_retry_after_s < 0:
            raise ConfigError(
                f"webhook retry policy: expected max_attempts >= 1 and 0 < base_s <= max_s, found {self}"
            )


@dataclass(frozen=True)
class _Delivery:
    event_type: str
    body: bytes
    delivery_id: str


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class WebhookEndpoint:
    """One URL: a bounded queue of deliveries and the worker that sends them in order."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        secret: bytes | None,
        node: str,
        queue: int,
        timeout_s: float,
        policy: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self.url = check_webhook_url(url)
        self.name = name
        self.counters = WebhookCounters()
        self._secret = secret
        self._node = node
        self._queue: deque[_Delivery] = deque()
        self._maxsize = queue
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._policy = policy
        self._rng = rng
        self._ready = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, delivery: _Delivery) -> None:
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.counters.dropped_queue_full += 1
            logger.warning("webhook %s: queue of %d full, dropped the oldest event", self.name, self._maxsize)
        self._queue.append(delivery)
        self._ready.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._ready.wait()
            if not self._queue:
                self._ready.clear()
                continue
            await self._deliver(session, self._queue.popleft())

    async def _deliver(self, session: aiohttp.ClientSession, delivery: _Delivery) -> None:
        for attempt in range(self._policy.max_attempts):
            if attempt:
                self.counters.retried += 1
            try:
                await self._post(session, delivery)
            except _Retry as retry:
                if attempt + 1 == self._policy.max_attempts:
                    self.counters.dropped_gave_up += 1
                    logger.warning(
                        "webhook %s: gave up on a %s event after %d attempts (%s)",
                        self.name,
                        delivery.event_type,
                        attempt + 1,
                        retry,
                    )
                    return
                delay = full_jitter_delay(attempt, self._policy.base_s, self._policy.max_s, self._rng)
                if retry.wait_s is not None:
                    delay = max(delay, min(retry.wait_s, self._policy.max_retry_after_s))
                logger.info("webhook %s: %s; retry %d in %.2f s", self.name, retry, attempt + 1, delay)
                await asyncio.sleep(delay)
            else:
                return

    async def _post(self, session: aiohttp.ClientSession, delivery: _Delivery) -> None:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            DELIVERY_HEADER: delivery.delivery_id,
            EVENT_HEADER: delivery.event_type,
            NODE_HEADER: self._node,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, delivery.body)
        try:
            async with session.post(
                self.url, data=delivery.body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                wait = retry_after_s(response.headers.get("Retry-After"))
        except TimeoutError:
            raise _Retry(f"no answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
        if 200 <= status < 300:
            self.counters.delivered += 1
            return
        if status >= 500 or status in RETRIED_STATUSES:
            raise _Retry(f"answered {status}", wait)
        self.counters.dropped_refused += 1
        logger.warning(
            "webhook %s: refused a %s event with %d; not retried", self.name, delivery.event_type, status
        )


class WebhookSink:
    """POST the chosen hub events to every endpoint; ``run()`` until cancelled.

    The hub subscription is taken at construction, so nothing published between
    construction and ``run()`` is missed. ``counters()`` is what a metrics exporter reads.
    """

    def __init__(
        self,
        hub: EventHub,
        urls: Sequence[str],
        *,
        secret: str | None = None,
        events: Iterable[str] = ("alarm",),
        node: str = "node",
        queue: int = 1000,
        timeout_s: float = 5.0,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ConfigError("webhook: expected at least one URL, found none")
        if queue < 1:
            raise ConfigError(f"webhook queue: expected at least 1 event, found {queue}")
        if not timeout_s > 0:
            raise ConfigError(f"webhook timeout: expected seconds > 0, found {timeout_s}")
        self.types = event_types(events)
        key = secret.encode("utf-8") if secret else None
        policy = policy or RetryPolicy()
        rng = rng or random.Random()
        self.endpoints = [
            WebhookEndpoint(
                url,
                name=f"{index}:{endpoint_display(check_webhook_url(url))}",
                secret=key,
                node=node,
                queue=queue,
                timeout_s=timeout_s,
                policy=policy,
                rng=rng,
            )
            for index, url in enumerate(urls)
        ]
        self._hub = hub
        # The dispatcher drains this at once into the endpoints' queues, which hold the bound.
        self._sub = hub.subscribe(
            maxsize=max(queue, 1024),
            keep_alarms=True,
            name="webhook",
            predicate=lambda e: e.type in self.types,
        )
        if key is None:
            logger.warning(
                "webhooks are sent unsigned: set server.webhook_secret so receivers can verify them"
            )

    def counters(self) -> dict[str, dict[str, int]]:
        """Per endpoint (``index:scheme://host:port``): delivered, retried, dropped (and why), queued."""
        return {e.name: {**e.counters.as_dict(), "queued": e.queued} for e in self.endpoints}

    def _dispatch(self, event: Event) -> None:
        delivery = _Delivery(event.type, to_json(event).encode("utf-8"), uuid.uuid4().hex)
        for endpoint in self.endpoints:
            endpoint.offer(delivery)

    async def run(self) -> None:
        logger.info(
            "sending %s events to %d webhook(s): %s",
            ",".join(sorted(self.types)),
            len(self.endpoints),
            ", ".join(e.name for e in self.endpoints),
        )
        try:
            async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
                for endpoint in self.endpoints:
                    group.create_task(endpoint.run(session), name=f"webhook {endpoint.name}")
                while True:
                    self._dispatch(await self._sub.get())
        finally:
            self._hub.unsubscribe(self._sub)
            pending = sum(e.queued for e in self.endpoints)
            if pending:
                logger.warning("webhooks stopped with %d event(s) not delivered", pending)


def webhook_sink_from_config(hub: EventHub, config: ServerConfig) -> WebhookSink:
    """The sink ``spoofwatch serve`` runs from ``server.webhooks`` and its options."""
    return WebhookSink(
        hub,
        config.webhooks,
        secret=config.webhook_secret,
        events=config.webhook_events,
        node=config.node,
        queue=config.webhook_queue,
        timeout_s=config.webhook_timeout_s,
    )
