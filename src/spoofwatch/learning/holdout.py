"""Which feedback trains a retrained head and which is held out for its canary.

Whole streams go one way or the other (windows of one call are alike, so a call split
between training and test would flatter the candidate), decided by a hash of the stream
id: the same feedback always splits the same way, on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from spoofwatch.errors import ConfigError
from spoofwatch.learning.feedback_store import FeedbackRecord

DEFAULT_HOLDOUT = 0.2


def check_fraction(fraction: float) -> float:
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction: expected a value in [0, 1), found {fraction}")
    return fraction


def is_held_out(stream_id: str, fraction: float) -> bool:
    """True for the streams whose hash falls in the first ``fraction`` of the range."""
    value = int(hashlib.sha256(stream_id.encode()).hexdigest()[:12], 16) / float(1 << 48)
    return value < check_fraction(fraction)


def split_feedback(
    records: Sequence[FeedbackRecord], fraction: float
) -> tuple[list[FeedbackRecord], list[FeedbackRecord]]:
    """(training records, held-out records)."""
    train = [r for r in records if not is_held_out(r.stream_id, fraction)]
    held = [r for r in records if is_held_out(r.stream_id, fraction)]
    return train, held
