"""The ingest node's side of the pool: ``RayScorer``, a ``WindowScorer`` that sends each
batch the streaming batcher takes to the pool instead of the local encoder.

The batcher is unchanged: it calls ``score_windows`` from its worker threads (one batch
per worker at a time), so per-stream order, one window in flight per stream, the bounded
queue, its drop policy and counters are the local scorer's. Each worker thread blocks on
its pool call; ``[engine] workers`` is then how many batches are in flight to the pool.

A batch whose call fails (a replica died mid-batch: ``RayActorError``; no answer within
``timeout_s``; Serve unable to route it) is sent once more; Serve's router has taken the
dead replica out by then, so the retry reaches another. If that fails too the pool is
*unreachable*: the scorer says so (``health``, the callbacks of ``on_health_change``, the
log) and from then on scores locally (``fallback``, ``--scorer ray,local``) or fails the
batch at once, so that the admission policy refuses new calls; every ``probe_interval_s``
one batch tries the pool again and, when it answers, the pool is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, ModelError, SpoofwatchError
from spoofwatch.model.scorer import StreamContext, WindowScorer
from spoofwatch.pool.control import PoolError
from spoofwatch.pool.identity import card_identity, describe_identity

logger = logging.getLogger(__name__)

HealthCallback = Callable[[dict[str, Any]], None]


class PoolCallFailed(SpoofwatchError):
    """One call to the pool failed in a way another replica may not (retried once)."""


class PoolHandle(Protocol):
    """How the scorer reaches the pool (``RayPoolHandle``; a fake in unit tests)."""

    address: str

    def describe(self, timeout_s: float) -> dict[str, Any]:
        """The detector's geometry and ``identity``; raises PoolCallFailed."""
        ...

    def score(self, windows: NDArray[np.float32], timeout_s: float) -> dict[str, Any]:
        """``scores`` and ``identity`` of one batch; raises PoolCallFailed or ModelError."""
        ...


class RayPoolHandle:
    """The pool's Serve application, through a deployment handle (this process joins the
    Ray cluster as a driver)."""

    def __init__(self, address: str | None) -> None:
        from ray import serve

        from spoofwatch.pool.control import connect
        from spoofwatch.pool.spec import APP_NAME

        self.address = address or "auto"
        self._app = APP_NAME
        self._get_app_handle = serve.get_app_handle
        self._handle: Any = None
        connect(address)

    def _target(self, method: str) -> Any:
        if self._handle is None:
            try:
                self._handle = self._get_app_handle(self._app)
            except Exception as exc:  # Serve not started, or no such application
                raise PoolCallFailed(
                    f"no inference pool on the Ray cluster at {self.address} ({exc}); "
                    "expected one deployed by `spoofwatch pool up`"
                ) from None
        return getattr(self._handle, method)

    def describe(self, timeout_s: float) -> dict[str, Any]:
        return self._call("describe", None, timeout_s)

    def score(self, windows: NDArray[np.float32], timeout_s: float) -> dict[str, Any]:
        return self._call("score", windows, timeout_s)

    def _call(self, method: str, arg: Any, timeout_s: float) -> dict[str, Any]:
        from ray.exceptions import RayTaskError

        target = self._target(method)
        response = target.remote() if arg is None else target.remote(arg)
        try:
            result: dict[str, Any] = response.result(timeout_s=timeout_s)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, SpoofwatchError):  # the windows are at fault, not the replica
                raise ModelError(f"the pool refused the batch: {cause}") from None
            failure = cause or exc
            raise PoolCallFailed(f"pool replica failed: {type(failure).__name__}: {failure}") from None
        except TimeoutError:
            response.cancel()
            raise PoolCallFailed(f"no answer from the pool within {timeout_s:g} s") from None
        except Exception as exc:  # RayActorError, Serve's routing errors, a lost cluster
            raise PoolCallFailed(f"{type(exc).__name__}: {exc}") from None
        return result


class RayScorer:
    """``WindowScorer`` over the inference pool, with one retry and an optional local
    fallback. ``health()`` is what ``/healthz`` shows under ``scorer``."""

    def __init__(
        self,
        handle: PoolHandle,
        *,
        fallback: WindowScorer | None = None,
        timeout_s: float = 5.0,
        probe_interval_s: float = 5.0,
        inflight: int = 8,
        fallback_workers: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"engine.ray_timeout_s: expected seconds > 0, found {timeout_s!r}")
        if inflight < 1 or fallback_workers < 1:
            raise ConfigError(
                "engine.ray_inflight and engine.workers: expected at least 1 each, "
                f"found {inflight!r} and {fallback_workers!r}"
            )
        self.handle = handle
        self.fallback = fallback
        # The engine keeps this many batches in flight (model.scorer.batches_in_flight);
        # while the pool is down only fallback_workers of them score here at once, so a
        # node does not run eight encoder passes on two cores.
        self.batches_in_flight = inflight
        self._fallback_slots = threading.BoundedSemaphore(fallback_workers)
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[HealthCallback] = []
        self.retries = 0
        self.fallback_batches = 0
        self.pool_batches = 0
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._last_probe = 0.0
        try:
            self._described = handle.describe(timeout_s)
        except PoolCallFailed as exc:
            if fallback is None:
                raise PoolError(f"the inference pool at {handle.address} does not answer: {exc}") from None
            self._described = {}
            self._mark_down(str(exc))
        self._check_geometry()

    def _check_geometry(self) -> None:
        if self.fallback is None or not self._described:
            return
        pool = (self._described["sample_rate"], self._described["window_samples"])
        local = (self.fallback.sample_rate, self.fallback.window_samples)
        if pool != local or abs(self._described["threshold"] - self.fallback.threshold) > 1e-12:
            raise ConfigError(
                f"the pool's detector {describe_identity(self.identity)} and the local fallback differ "
                f"(sample rate, window samples: {pool} and {local}); expected the same detector on both"
            )
        card = getattr(self.fallback, "card", None)
        if isinstance(card, dict):
            identity = getattr(getattr(self.fallback, "encoder", None), "identity", None)
            encoder = getattr(identity, "name", None)
            mine = card_identity(card, encoder or self.identity.get("encoder", ""))
            if mine != self.identity:
                raise ConfigError(
                    f"the pool holds detector {describe_identity(self.identity)} but the local fallback "
                    f"is {describe_identity(mine)}; expected the same detector on both"
                )

    # --- WindowScorer --------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self._described["sample_rate"]) if self._described else self._local().sample_rate

    @property
    def window_samples(self) -> int:
        return int(self._described["window_samples"]) if self._described else self._local().window_samples

    @property
    def threshold(self) -> float:
        return float(self._described["threshold"]) if self._described else self._local().threshold

    @property
    def card(self) -> dict[str, Any]:
        if self._described:
            return dict(self._described.get("card", {}))
        return dict(getattr(self._local(), "card", {}))

    @property
    def identity(self) -> dict[str, str]:
        return dict(self._described.get("identity", {}))

    def stream_context(self) -> StreamContext | None:
        return None

    def score_windows(
        self, windows: NDArray[np.float32], companions: NDArray[np.float32] | None = None, /
    ) -> NDArray[np.float64]:
        if companions is not None:
            raise ModelError(
                "the ray scorer sends windows alone; expected a detector without a streamed-remake "
                "front end (use --scorer local for resynth)"
            )
        batch = np.ascontiguousarray(windows, dtype=np.float32)
        if self._down_since is not None and not self._probe_due():
            return self._when_down(batch)
        attempts = 1 if self._down_since is not None else 2
        for attempt in range(attempts):
            try:
                result = self.handle.score(batch, self.timeout_s)
            except PoolCallFailed as exc:
                if attempt + 1 < attempts:
                    with self._lock:
                        self.retries += 1
                    logger.warning("pool call failed (%s); retrying the batch of %d once", exc, len(batch))
                    continue
                self._mark_down(str(exc))
                return self._when_down(batch)
            self._accept(result)
            return np.asarray(result["scores"], dtype=np.float64)
        raise AssertionError("unreachable")  # the loop returns or raises

    # --- health --------------------------------------------------------------------------

    def on_health_change(self, callback: HealthCallback) -> None:
        """``callback(health())`` whenever the pool goes down or comes back (any thread)."""
        self._listeners.append(callback)

    def health(self) -> dict[str, Any]:
        down = self._down_since is not None
        return {
            "kind": "ray",
            "address": self.handle.address,
            "pool": "unreachable" if down else "ok",
            "fallback": "local" if self.fallback is not None else None,
            "scoring": ("local" if self.fallback is not None else "none") if down else "pool",
            "accepting": not down or self.fallback is not None,
            "detector": self.identity or None,
            "pool_batches": self.pool_batches,
            "fallback_batches": self.fallback_batches,
            "retries": self.retries,
            "last_error": self.last_error,
        }

    def _probe_due(self) -> bool:
        with self._lock:
            if self._clock() - self._last_probe < self.probe_interval_s:
                return False
            self._last_probe = self._clock()
            return True

    def _mark_down(self, reason: str) -> None:
        with self._lock:
            self.last_error = reason
            was_down = self._down_since is not None
            if not was_down:
                self._down_since = self._last_probe = self._clock()
        if not was_down:
            where = "scoring locally" if self.fallback is not None else "refusing new calls"
            logger.error("inference pool at %s unreachable (%s); %s", self.handle.address, reason, where)
            self._notify()

    def _accept(self, result: dict[str, Any]) -> None:
        identity = result.get("identity")
        with self._lock:
            self.pool_batches += 1
            came_back = self._down_since is not None
            self._down_since = None
            changed = bool(self._described) and identity != self._described.get("identity")
        if changed:
            logger.warning(
                "the pool now scores with detector %s (was %s)",
                describe_identity(identity or {}),
                describe_identity(self.identity),
            )
            self._described = {**self._described, "identity": identity}
        if not self._described:  # started while the pool was down
            self._described = self.handle.describe(self.timeout_s)
            self._check_geometry()
        if came_back or changed:
            logger.info("inference pool at %s answers again", self.handle.address)
            self._notify()

    def _when_down(self, batch: NDArray[np.float32]) -> NDArray[np.float64]:
        if self.fallback is None:
            raise PoolError(f"inference pool at {self.handle.address} unreachable: {self.last_error}")
        with self._lock:
            self.fallback_batches += 1
        with self._fallback_slots:
            return self.fallback.score_windows(batch)

    def _local(self) -> WindowScorer:
        if self.fallback is None:
            raise PoolError("the inference pool never answered and there is no local fallback")
        return self.fallback

    def _notify(self) -> None:
        health = self.health()
        for callback in self._listeners:
            try:
                callback(health)
            except Exception:
                logger.exception("a pool health listener failed")
