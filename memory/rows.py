"""What every store shares about messages: the columns, a row as a ``Message``, and the
checks that refuse an op before it writes anything."""

from __future__ import annotations

import json
from typing import Any

import attrs

from anchorline.errors import Conflict
from anchorline.ops import Add, Content, Reserve
from anchorline.results import Message

#: The ``messages`` columns in the order :func:`message_from_row` reads them.
COLUMNS = (
    "id, conversation_id, role, content, metadata, status, client_message_id,"
    " created_at, updated_at"
)


def decode_metadata(text: str) -> dict[str, Any]:
    """Stored metadata JSON as a dict."""
    return {} if text == "{}" else json.loads(text)  # most messages carry none


def message_from_row(row: tuple[Any, ...]) -> Message:
    """A row of :data:`COLUMNS` (content and metadata as JSON text) as a ``Message``."""
    return Message(
        id=row[0],
        conversation_id=row[1],
        role=row[2],
        content=json.loads(row[3]),
        metadata=decode_metadata(row[4]),
        status=row[5],
        client_message_id=row[6],
        created_at=row[7],
        updated_at=row[8],
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
