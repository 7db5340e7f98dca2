"""What every store shares about messages: the columns, a row as a ``Message``, and the
checks that refuse an op before it writes anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import orjson

from anchorline.errors import Conflict
from anchorline.ops import COMPACTION_ROLE, Add, Compact, Content, Reserve
from anchorline.results import (
    Added,
    Compacted,
    ContentUpdated,
    Deleted,
    Message,
    Reserved,
    Status,
    Updated,
)

#: The ``messages`` columns a write supplies, in the order :func:`message_from_row` reads
#: them (``seq``, which the store assigns, comes last: see :data:`READ_COLUMNS`).
COLUMNS = (
    "id, conversation_id, role, content, metadata, status, client_message_id,"
    " created_at, updated_at"
)
#: What a read selects: :data:`COLUMNS` and ``seq``.
READ_COLUMNS = COLUMNS + ", seq"


def decode_json(text: str) -> Any:
    """Stored JSON text as Python values, every number exactly as written.

    orjson decodes a 500-byte content about 6 times faster than ``json``, but it
    turns an integer beyond 64 bits into a float, whose size then gives it away
    (at least 2**63). A value holding such a float is read again by ``json``
    (a real float that large reads the same), as is the text orjson refuses (a
    lone surrogate escape).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if type(value) is str or not _maybe_big(value):
        return value
    return json.loads(text)


#: The smallest float orjson makes of an integer it cannot hold in 64 bits.
_BIG = float(2**63)


def _maybe_big(value: Any) -> bool:
    """Whether ``value`` holds a float that may be an integer beyond 64 bits."""
    kind = type(value)
    if kind is float:
        return bool(value >= _BIG or value <= -_BIG)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:  # noqa: SIM110 - a loop is faster than any() over a generator
        if type(item) is not str and _maybe_big(item):
            return True
    return False


def decode_metadata(text: str) -> dict[str, Any]:
    """Stored metadata JSON as a dict."""
    return {} if text == "{}" else decode_json(text)  # most messages carry none


def message_from_row(row: tuple[Any, ...]) -> Message:
    """A row of :data:`READ_COLUMNS` (content and metadata as JSON text) as a ``Message``."""
    return Message(
        id=row[0],
        conversation_id=row[1],
        role=row[2],
        content=decode_json(row[3]),
        metadata=decode_metadata(row[4]),
        status=row[5],
        client_message_id=row[6],
        created_at=row[7],
        updated_at=row[8],
        seq=row[9],
    )


def compaction_message(op: Compact, message_id: str, now: int, seq: int) -> Message:
    """The row a store wrote for ``op``: role ``compaction``, the summary as content."""
    return Message(
        id=message_id,
        conversation_id=op.conversation_id,
        role=COMPACTION_ROLE,
        content=op.summary,
        metadata=op.stored_metadata(),
        status="complete",
        created_at=now,
        updated_at=now,
        seq=seq,
    )


def check_replay(stored: Message, op: Add | Reserve) -> None:
    """Refuse a repeated ``client_message_id`` that names a different message."""
    if stored.role != op.role:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} is already used by a {stored.role}"
            f" message in conversation {op.conversation_id!r}"
        )
    if op.message_id is not None and op.message_id != stored.id:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} already names message {stored.id!r},"
            f" not {op.message_id!r}"
        )
    if isinstance(op, Add) and stored.status == "complete" and stored.content != op.content:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} already names a message"
            " with other content"
        )


def check_expected(stored: Message, expected: int | None) -> None:
    """Refuse to write a message changed since the caller read it (``expect_updated_at``)."""
    if expected is not None and stored.updated_at != expected:
        raise Conflict(
            f"message_id: message {stored.id!r} changed since it was read"
            f" (updated_at {stored.updated_at}, expected {expected})"
        )


def completed(stored: Message, content: Content, metadata: dict[str, Any], now: int) -> Message:
    """The reserved placeholder ``stored`` completed by the ``Add`` that shares its client id
    and brings ``content`` and ``metadata``."""
    return attrs.evolve(
        stored,
        content=content,
        metadata={**stored.metadata, **metadata} if metadata else stored.metadata,
        status="complete",
        updated_at=max(now, stored.updated_at + 1),
    )


def inserted(
    op: Add | Reserve, message_id: str, content: Content, status: Status, now: int, seq: int
) -> Message:
    """The message a fresh add or reserve wrote."""
    return Message(
        id=message_id,
        conversation_id=op.conversation_id,
        role=op.role,
        content=content,
        metadata=op.metadata,
        status=status,
        client_message_id=op.client_message_id,
        created_at=now,
        updated_at=now,
        seq=seq,
    )


def after_conflict(
    op: Add | Reserve,
    message_id: str,
    now: int,
    same_id: Message | None,
    by_client_id: Callable[[], Message | None],
    complete: Callable[[Message], Message],
) -> tuple[Message, bool]:
    """What an add or reserve means when its insert met a stored row; the message and
    whether it was already stored (``deduplicated``).

    ``same_id`` is the stored row with the op's id. If it is this very write (an
    attempt whose COMMIT was reported failed although it landed), the replay is
    done. Otherwise a repeated ``client_message_id`` names the stored message
    (``by_client_id``): an Add meeting its own reserved placeholder completes it
    (``complete``), anything else returns it as stored. An id taken by another
    message is a :class:`Conflict`.
    """
    if same_id is not None and same_id.created_at == now and same_id.role == op.role:
        return same_id, False
    if op.client_message_id is not None:
        stored = by_client_id()
        if stored is not None:
            check_replay(stored, op)
            if isinstance(op, Add) and stored.status == "reserved":
                return complete(stored), False
            return stored, True
    raise Conflict(f"message_id: a message with id {message_id!r} already exists")


def _each(results: Sequence[object]) -> Iterator[object]:
    """Every result, a batch's results (a list) taken one by one."""
    for result in results:
        if type(result) is list:
            yield from result
        else:
            yield result


def landed(results: Sequence[object], get_message: Callable[[str], Message | None]) -> bool:
    """Whether the writes that gave ``results`` are in the database, after a COMMIT that
    reported an error (or whose answer was lost with its connection): every message
    they touched is stored exactly as their last result left it, or is gone if they
    deleted it."""
    final: dict[str, Message | None] = {}
    for result in _each(results):
        if isinstance(result, Deleted):
            if result.existed:
                final[result.message_id] = None
        elif isinstance(result, Added | Reserved | ContentUpdated | Updated | Compacted):
            final[result.message.id] = result.message
    if not final:
        return False
    return all(get_message(message_id) == expected for message_id, expected in final.items())
