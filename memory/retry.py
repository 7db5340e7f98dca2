"""The retry policy every store writes under: how many attempts, how long, what backoff."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from anchorline.errors import ConfigurationError

#: The longest lock wait a database takes, in seconds (SQLite's is a 32-bit count of ms).
_LONGEST_WAIT = 2_000_000


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(f"{attribute.name}: must be a positive number, got {value!r}")


def _attempts(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{attribute.name}: must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How long a write keeps trying when the database is busy or failing.

    Each attempt waits up to ``busy_timeout`` seconds for the database's write
    lock; between attempts the policy sleeps an exponential backoff from
    ``initial_backoff`` to ``max_backoff``, with full jitter. It gives up after
    ``max_attempts`` or once ``deadline`` seconds have passed since the first.
    """

    max_attempts: int = attrs.field(default=8, validator=_attempts)
    initial_backoff: float = attrs.field(default=0.01, validator=_positive)
    max_backoff: float = attrs.field(default=0.5, validator=_positive)
    deadline: float = attrs.field(default=10.0, validator=_positive)
    busy_timeout: float = attrs.field(default=2.0, validator=_positive)
    jitter: bool = True

    def backoff(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt - 1, 64))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    @property
    def busy_timeout_ms(self) -> int:
        """How long one attempt waits for the lock, in ms: never past the deadline."""
        return int(min(self.busy_timeout, self.deadline, _LONGEST_WAIT) * 1000)
