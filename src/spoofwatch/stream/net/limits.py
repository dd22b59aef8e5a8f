"""Per-connection limits on untrusted clients: message size, message rate, streams.

Pure (no I/O): the server's connection handlers ask ``ConnectionGuard`` before acting on
each message and on each stream they open, and turn a ``LimitExceededError`` into an
error event, the end of the connection's streams and a close. The rate is a token
bucket: ``max_messages_per_s`` sustained, ``max_message_burst`` at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from spoofwatch.config import ServerConfig
from spoofwatch.errors import ConfigError, LimitExceededError

Clock = Callable[[], float]


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may do; defaults are ``ServerConfig``'s."""

    max_message_bytes: int = ServerConfig.max_message_bytes
    max_messages_per_s: float = ServerConfig.max_messages_per_s
    max_message_burst: int = ServerConfig.max_message_burst
    max_streams_per_connection: int = ServerConfig.max_streams_per_connection

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_messages_per_s) and self.max_messages_per_s > 0):
            raise ConfigError(
                f"max_messages_per_s: expected a finite number > 0, found {self.max_messages_per_s!r}"
            )
        if self.max_message_burst < 1 or self.max_message_bytes < 1 or self.max_streams_per_connection < 0:
            raise ConfigError(
                "connection limits: expected max_message_burst >= 1, max_message_bytes >= 1 and "
                f"max_streams_per_connection >= 0, found {self.max_message_burst}, "
                f"{self.max_message_bytes} and {self.max_streams_per_connection}"
            )

    @classmethod
    def from_config(cls, config: ServerConfig) -> ConnectionLimits:
        return cls(
            max_message_bytes=config.max_message_bytes,
            max_messages_per_s=config.max_messages_per_s,
            max_message_burst=config.max_message_burst,
            max_streams_per_connection=config.max_streams_per_connection,
        )


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float, tokens: float = 1.0) -> bool:
        """Spend ``tokens`` if there are that many; False (nothing spent) otherwise."""
        elapsed = max(0.0, now - self.updated)  # a clock that steps back refills nothing
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens < tokens:
            return False
        self.tokens -= tokens
        return True


class ConnectionGuard:
    """One connection's counters against its ``ConnectionLimits``."""

    def __init__(self, limits: ConnectionLimits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.bucket = TokenBucket(limits.max_messages_per_s, limits.max_message_burst, clock())
        self.messages = 0
        self.streams_opened = 0

    def on_message(self) -> None:
        """Count one received message; LimitExceededError when the client is too fast."""
        self.messages += 1
        if not self.bucket.take(self.clock()):
            limits = self.limits
            raise LimitExceededError(
                f"message rate: expected at most {limits.max_messages_per_s:g} messages/s "
                f"(bursts of {limits.max_message_burst}), found a client sending faster"
            )

    def on_stream_opened(self, count: int = 1) -> None:
        """Count streams about to open; LimitExceededError beyond the per-connection limit."""
        limit = self.limits.max_streams_per_connection
        if limit and self.streams_opened + count > limit:
            raise LimitExceededError(
                f"streams per connection: expected at most {limit}, found {self.streams_opened} "
                f"opened and {count} more requested; open a new connection"
            )
        self.streams_opened += count
