"""The one transport retry policy: which failures to retry and how long to wait.

Retried: 408, 409, 429 (unless the quota is exhausted), 5xx (529 included), timeouts and
connection errors; backends mark these `retryable`. Waits grow exponentially with full jitter,
honour the provider's `retry-after` (seconds or an HTTP date), and never exceed the cap.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUS", "backoff", "is_retryable_status", "parse_retry_after"]

RETRYABLE_STATUS = frozenset({408, 409, 429})
BASE_DELAY_S = 0.5
MAX_RETRY_AFTER_S = 3600.0


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `retry-after` (or `retry-after-ms`-style seconds) header value:
    `None` when it is not a number or date (`inf` and `nan` are not), at most `MAX_RETRY_AFTER_S`
    (a batch poll slept as long as a header said: `inf`, or a date in the year 9999, was a hang).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def backoff(retry: int, retry_after: float | None, cap: float) -> float:
    """Wait before retry number `retry` (0-based): the provider's `retry-after` when given,
    else exponential backoff with full jitter; at most `cap` seconds."""
    if retry_after is not None:
        return min(cap, retry_after)
    return min(cap, random.uniform(0, BASE_DELAY_S * 2**retry))
