"""The retry engine both stores' transactions run on: a journal of writes to replay, the
attempts a policy allows, and what a replay changed.

A transaction keeps each write as a function of the attempt's connection (its ids
and times fixed before the first attempt), in a :class:`Journal`. When an attempt
fails in a way another may pass, the store rolls it back and replays the whole
journal in a fresh one, pausing between attempts as :class:`Attempts` says. A
replay can store a write differently from the first attempt (another writer took
the seq meanwhile, or changed the metadata an ``Update`` merges), but the chain
already holds the first attempt's results: :meth:`Journal.corrections` pairs each
result handed out with the one the committing attempt made, so the unit of work
returns what is stored.

Whether a COMMIT that failed may have landed, and how to ask, is each store's own
(``crud.landed``): this module knows no database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from anchorline.memory.retry import RetryPolicy

T = TypeVar("T")
C = TypeVar("C")
#: ``(handed out, committed)`` pairs of the results a replay changed.
Corrections = Sequence[tuple[Any, Any]]
#: What a commit without a replay returns.
NONE: Corrections = ()


class Attempts:
    """The attempts at one piece of work under a :class:`RetryPolicy`: how many so far,
    how long is left, and the backoff between them."""

    __slots__ = ("count", "policy", "started")

    def __init__(self, policy: RetryPolicy, started: float | None = None) -> None:
        self.policy = policy
        self.started = time.monotonic() if started is None else started
        self.count = 1

    def remaining(self) -> float:
        """Seconds left before the policy's deadline."""
        return self.started + self.policy.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def again(self) -> bool:
        """Sleep the backoff before the next attempt and count it; ``False`` (without
        sleeping) once the policy gives up: its attempts are spent, or the pause would
        reach past its deadline."""
        pause = self.policy.backoff(self.count)
        if self.count >= self.policy.max_attempts or self.remaining() <= pause:
            return False
        time.sleep(pause)
        self.count += 1
        return True


class Journal:
    """The writes of one transaction, each a function of the attempt's connection, and
    their results: ``results`` as the latest attempt made them, and, once a replay may
    have made them differ, ``given``: what each write handed out to its caller."""

    __slots__ = ("given", "results", "writes")

    def __init__(self) -> None:
        self.writes: list[Callable[[Any], Any]] = []
        self.results: list[Any] = []
        self.given: list[Any] | None = None

    def wrote(self, result: Any) -> None:
        """The last write went through in the current attempt and handed out ``result``."""
        self.results.append(result)
        if self.given is not None:
            self.given.append(result)

    def refused(self) -> None:
        """The last write was refused before it wrote anything: a replay leaves it out."""
        self.writes.pop()

    def replay(self, conn: Any) -> Any:
        """Run every write again on ``conn`` (a fresh attempt); the last one's result."""
        if self.given is None:
            self.given = list(self.results)  # what was handed out before this replay
        self.results = [write(conn) for write in self.writes]
        return self.results[-1] if self.results else None

    def handed_out(self, result: Any) -> None:
        """A write that failed, and was replayed or found landed, handed out ``result``
        (what the latest attempt made of it)."""
        if self.given is not None:
            self.given.append(result)

    def corrections(self) -> Corrections:
        """The results handed out that the committing attempt stored differently."""
        return NONE if self.given is None else corrections(self.given, self.results)


def corrections(given: Sequence[Any], committed: Sequence[Any]) -> Corrections:
    """The results in ``given`` (one per write, as each handed it out) that differ from
    ``committed`` (as the committing attempt made them); a list result (a batch of
    adds) is paired whole and item by item."""
    pairs: list[tuple[Any, Any]] = []
    for old, new in zip(given, committed, strict=False):
        if old is new or old == new:
            continue
        pairs.append((old, new))
        if type(old) is list and type(new) is list:
            pairs.extend((a, b) for a, b in zip(old, new, strict=False) if a != b)
    return pairs


def settled(result: T, pairs: Corrections) -> T:
    """``result`` as the committing attempt made it."""
    for given, committed in pairs:
        if given is result:
            return committed  # type: ignore[no-any-return]
    return result
