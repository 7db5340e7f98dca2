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


def conversation_from_row(row: tuple[Any, ...]) -> Conversation:
    return Conversation(
        id=row[0], message_count=row[1], first_at=row[2], last_at=row[3], parent_id=row[4]
    )
