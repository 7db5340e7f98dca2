"""Server-minted message ids and the write clock."""

from __future__ import annotations

import threading
import time

import uuid_utils


def new_message_id() -> str:
    """A time-ordered UUIDv7, as text."""
    return str(uuid_utils.uuid7())


def wall_ms() -> int:
    """Milliseconds since the epoch, from the wall clock."""
    return time.time_ns() // 1_000_000


class Clock:
    """Milliseconds since the epoch, strictly increasing within the process.

    Two messages created in the same millisecond get consecutive values, so
    creation order is total. Under a burst of more than 1,000 new messages a
    second the clock runs ahead of wall time, and catches up once the burst
    ends. Only creation uses it: later writes stamp ``updated_at`` with the
    wall clock (kept above the message's previous ``updated_at``).
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        wall = time.time_ns() // 1_000_000
        with self._lock:
            self._last = wall if wall > self._last else self._last + 1
            return self._last


clock = Clock()
