"""What a replayed transaction changed in the results it had already handed out.

A store's transaction keeps a journal of its writes and, when an attempt fails
in a way another may pass, replays the whole journal in a fresh attempt. The
replay can store a write differently from the first attempt (another writer took
the seq meanwhile, or changed the metadata an ``Update`` merges), but the chain
already holds the first attempt's result. :func:`corrections` pairs each result
handed out with the one the committing attempt made, so the unit of work can
return what is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: ``(handed out, committed)`` pairs of the results a replay changed.
Corrections = Sequence[tuple[Any, Any]]
#: What a commit without a replay returns.
NONE: Corrections = ()


def corrections(given: Sequence[Any], committed: Sequence[Any]) -> Corrections:
    """The results in ``given`` (one per journal entry, as each write returned it) that
    differ from ``committed`` (as the committing attempt made them); a list result
    (a batch of adds) is paired whole and item by item."""
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
