"""What every store shares about the change feed and the conversations list."""

from __future__ import annotations

from typing import Any

from anchorline.errors import CursorExpired
from anchorline.results import Change, Conversation

from .interface import ConversationState

#: The metadata key under which a store keeps the cursor the feed was trimmed before.
TRIMMED_KEY = "changes_trimmed_before"

#: The ``changes`` columns in the order :func:`change_from_row` reads them.
CHANGE_COLUMNS = "cursor, kind, message_id, conversation_id, seq, at, final"
#: The ``conversations`` columns in the order :func:`conversation_from_row` reads them.
CONVERSATION_COLUMNS = "id, message_count, first_at, last_at, parent_id"


def check_cursor(after: int, trimmed_before: int) -> None:
    """Refuse to read on from a cursor whose next changes were trimmed away."""
    if after + 1 < trimmed_before:
        raise CursorExpired(after, trimmed_before)


def change_from_row(row: tuple[Any, ...]) -> Change:
    return Change(
        cursor=row[0],
        kind=row[1],
        message_id=row[2],
        conversation_id=row[3],
        seq=row[4],
        at=row[5],
        final=bool(row[6]),
    )


#: What copying reads of a conversation's row (``state_from_row``'s order).
STATE_COLUMNS = "id, parent_id, next_seq, first_at, last_at"


def state_from_row(row: tuple[Any, ...]) -> ConversationState:
    return ConversationState(
        id=row[0], parent_id=row[1], next_seq=row[2], first_at=row[3], last_at=row[4]
    )


def conversations_query(
    table: str, mark: str, limit: int | None, after: tuple[int, str] | None, parent_id: str | None
) -> tuple[str, list[Any]]:
    """The SQL and values that list ``table``'s conversations, newest activity first, after
    the key ``after``; ``mark`` is the driver's placeholder (``?`` or ``%s``)."""
    where: list[str] = []
    params: list[Any] = []
    if parent_id is not None:
        where.append(f"parent_id = {mark}")
        params.append(parent_id)
    if after is not None:
        where.append(f"(last_at, id) < ({mark}, {mark})")
        params.extend(after)
    sql = f"SELECT {CONVERSATION_COLUMNS} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY last_at DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {mark}"
        params.append(limit)
    return sql, params


def conversation_from_row(row: tuple[Any, ...]) -> Conversation:
    return Conversation(
        id=row[0], message_count=row[1], first_at=row[2], last_at=row[3], parent_id=row[4]
    )
