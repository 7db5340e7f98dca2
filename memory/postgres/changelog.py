"""The change feed and the conversations list in PostgreSQL, and watching for commits.

Why a cursor's order is the commit order (docs/conversation-log.md): the feed
rows of a transaction are written by its last statement, sent in one message
with its ``COMMIT``. That statement first moves the single ``changes_head`` row
on by the number of rows, which locks that row until the transaction ends. A
second transaction doing the same waits for the lock, then (READ COMMITTED)
reads the head as the first one left it. So cursors are handed out in the
order in which transactions take the head, each holds it through its commit,
and a transaction that took a smaller cursor has committed (or rolled back)
before any larger cursor is handed out: a reader that sees a cursor sees every
smaller one that will ever exist.

A follower hears of other processes' commits through ``NOTIFY anchorline_changes``,
sent by the writing process after its commits (coalesced, at most one per
:attr:`~.notify.Notifier.spacing` per process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from anchorline.memory.changelog import (
    CHANGE_COLUMNS,
    STATE_COLUMNS,
    TRIMMED_KEY,
    change_from_row,
    check_cursor,
    conversation_from_row,
    conversations_query,
    state_from_row,
)
from anchorline.memory.interface import ConversationState
from anchorline.results import Change, Conversation

from .crud import Executes
from .notify import Listener
from .schema import SCHEMA

CHANNEL = "anchorline_changes"
CHANGES = f"{SCHEMA}.changes"
META = f"{SCHEMA}.anchorline_meta"

#: The transaction's feed rows (schema.py's log_changes), then its COMMIT: one message,
#: one round trip.
FEED = (
    f"SELECT {SCHEMA}.log_changes(%(kind)s::text[], %(final)s::boolean[],"
    " %(message_id)s::text[], %(conversation_id)s::text[], %(seq)s::bigint[],"
    " %(at)s::bigint[]); COMMIT"
)


#: The same for the usual transaction of one write (schema.py's log_change, whose
#: statements keep their plans for the session).
FEED_ONE = f"SELECT {SCHEMA}.log_change(%s, %s, %s, %s, %s, %s); COMMIT"


def feed_params(changes: Sequence[tuple[str, bool, str, str, int, int]]) -> dict[str, Any]:
    columns = list(zip(*changes, strict=True))
    names = ("kind", "final", "message_id", "conversation_id", "seq", "at")
    return {n: list(c) for n, c in zip(names, columns, strict=True)}


def _trimmed_before(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT value FROM {META} WHERE key = %s", (TRIMMED_KEY,)).fetchone()
    return int(row[0]) if row else 0


def list_changes(conn: psycopg.Connection[Any], after: int, limit: int) -> list[Change]:
    rows = conn.execute(
        f"SELECT {CHANGE_COLUMNS} FROM {CHANGES} WHERE cursor > %s ORDER BY cursor LIMIT %s",
        (after, limit),
    ).fetchall()
    check_cursor(after, _trimmed_before(conn))  # after the read: a trim before it is seen
    return [change_from_row(row) for row in rows]


def last_cursor(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT last FROM {SCHEMA}.changes_head WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def trim_changes(conn: psycopg.Connection[Any], before: int) -> int:
    """Drop the changes below ``before``, keeping the newest (as every store does)."""
    with conn.transaction():
        newest = conn.execute(f"SELECT max(cursor) FROM {CHANGES}").fetchone()
        if newest is None or newest[0] is None:
            return 0
        bound = min(before, int(newest[0]))
        if bound <= _trimmed_before(conn):
            return 0
        removed = conn.execute(f"DELETE FROM {CHANGES} WHERE cursor < %s", (bound,)).rowcount
        conn.execute(
            f"INSERT INTO {META} VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (TRIMMED_KEY, str(bound)),
        )
        return removed


def list_conversations(
    conn: psycopg.Connection[Any],
    limit: int | None,
    after: tuple[int, str] | None,
    parent_id: str | None,
) -> list[Conversation]:
    """Conversations, newest activity first, after the key ``after``."""
    sql, params = conversations_query(f"{SCHEMA}.conversations", "%s", limit, after, parent_id)
    return [conversation_from_row(row) for row in conn.execute(sql, params).fetchall()]


class PostgresWatch:
    """LISTENs on a connection of its own from the start, so no commit is missed."""

    def __init__(self, connect: Callable[[float], psycopg.Connection[Any]]) -> None:
        self._listener = Listener(connect, CHANNEL)
        self._listener.listen(10.0)

    def wait(self, timeout: float) -> bool:
        return self._listener.wait(timeout)

    def close(self) -> None:
        self._listener.close()


def scan_conversations(
    conn: psycopg.Connection[Any], after_id: str | None, limit: int
) -> list[ConversationState]:
    """Conversations in id order after ``after_id`` (see ``Store.scan_conversations``)."""
    rows = conn.execute(
        f"SELECT {STATE_COLUMNS} FROM {SCHEMA}.conversations WHERE id > %s ORDER BY id LIMIT %s",
        (after_id or "", limit),
    ).fetchall()
    return [state_from_row(row) for row in rows]


# The message inserts keep the count; the rest moves on to the copied row's.
_RESTORE_CONVERSATION = f"""
INSERT INTO {SCHEMA}.conversations AS c
    (id, parent_id, next_seq, message_count, first_at, last_at)
VALUES (%s, %s, %s, 0, %s, %s)
ON CONFLICT (id) DO UPDATE SET parent_id = coalesce(c.parent_id, excluded.parent_id),
    next_seq = GREATEST(c.next_seq, excluded.next_seq),
    first_at = LEAST(c.first_at, excluded.first_at),
    last_at = GREATEST(c.last_at, excluded.last_at)
WHERE (c.parent_id IS NULL AND excluded.parent_id IS NOT NULL)
    OR c.next_seq < excluded.next_seq OR c.first_at > excluded.first_at
    OR c.last_at < excluded.last_at
RETURNING 1"""


def restore_conversation(db: Executes, state: ConversationState) -> bool:
    """Bring a conversation's row up to ``state`` (see ``Transaction.restore_conversation``)."""
    row = db.execute(
        _RESTORE_CONVERSATION,
        (state.id, state.parent_id, state.next_seq, state.first_at, state.last_at),
    ).fetchone()
    return row is not None
