"""The retry policy every store writes under: how many attempts, how long, what backoff."""

from __future__ import annotations

import random
from typing import Any

import attrs


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How long a write keeps trying when the database is busy or failing.

    Each attempt waits up to ``busy_timeout`` seconds for the database's write
    lock; between attempts the policy sleeps an exponential backoff from
    ``initial_backoff`` to ``max_backoff``, with full jitter. It gives up after
    ``max_attempts`` or once ``deadline`` seconds have passed since the first.
    """

    max_attempts: int = attrs.field(default=8, validator=_positive)
    initial_backoff: float = attrs.field(default=0.01, validator=_positive)
    max_backoff: float = attrs.field(default=0.5, validator=_positive)
    deadline: float = attrs.field(default=10.0, validator=_positive)
    busy_timeout: float = attrs.field(default=2.0, validator=_positive)
    jitter: bool = True

    def backoff(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    @property
    def busy_timeout_ms(self) -> int:
        """How long one attempt waits for the lock, in ms: never past the deadline."""
        return int(min(self.busy_timeout, self.deadline) * 1000)
