"""The change feed and the conversations list in SQLite, and watching for commits.

The rows are written by the triggers in ``schema.py``; SQLite has one writer
at a time, so the order of the ``changes`` rowids is the commit order.

A :class:`SQLiteWatch` learns of this connection's commits at once (a commit
hook, installed when the first watch begins) and of other processes' commits
within :data:`POLL` seconds, by reading ``PRAGMA data_version``, which changes
when another connection has committed (a read of the file's header, no query).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

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

T = TypeVar("T")

#: How often a watch looks for other processes' commits, in seconds.
POLL = 0.05


def _trimmed_before(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT value FROM anchorline_meta WHERE key = ?", (TRIMMED_KEY,)).fetchone()
    return int(row[0]) if row else 0


def list_changes(conn: apsw.Connection, after: int, limit: int) -> list[Change]:
    """Up to ``limit`` changes after the cursor ``after``, oldest first."""
    rows = conn.execute(
        f"SELECT {CHANGE_COLUMNS} FROM changes WHERE cursor > ? ORDER BY cursor LIMIT ?",
        (after, limit),
    ).fetchall()
    # Checked after the read, in the same transaction-less snapshot order: a trim
    # committed before the read is seen by this check.
    check_cursor(after, _trimmed_before(conn))
    return [change_from_row(row) for row in rows]


def last_cursor(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT max(cursor) FROM changes").fetchone()
    return int(row[0]) if row and row[0] is not None else _trimmed_before(conn)


def trim_changes(conn: apsw.Connection, before: int) -> int:
    """Drop the changes below ``before``, keeping the newest (so no rowid is reused)."""
    newest = conn.execute("SELECT max(cursor) FROM changes").fetchone()
    if newest is None or newest[0] is None:
        return 0
    bound = min(before, int(newest[0]))
    if bound <= _trimmed_before(conn):
        return 0
    conn.execute("DELETE FROM changes WHERE cursor < ?", (bound,))
    removed = conn.changes()
    conn.execute(
        "INSERT INTO anchorline_meta VALUES (?1, ?2)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (TRIMMED_KEY, str(bound)),
    )
    return removed


def list_conversations(
    conn: apsw.Connection,
    limit: int | None,
    after: tuple[int, str] | None,
    parent_id: str | None,
) -> list[Conversation]:
    """Conversations, newest activity first, after the key ``after``."""
    sql, params = conversations_query("conversations", "?", limit, after, parent_id)
    return [conversation_from_row(row) for row in conn.execute(sql, params)]


def scan_conversations(
    conn: apsw.Connection, after_id: str | None, limit: int
) -> list[ConversationState]:
    """Conversations in id order after ``after_id`` (see ``Store.scan_conversations``)."""
    rows = conn.execute(
        f"SELECT {STATE_COLUMNS} FROM conversations WHERE id > ? ORDER BY id LIMIT ?",
        (after_id or "", limit),
    )
    return [state_from_row(row) for row in rows]


# The message triggers keep the count; the rest moves on to the copied row's.
_RESTORE_CONVERSATION = """
INSERT INTO conversations (id, parent_id, next_seq, message_count, first_at, last_at)
VALUES (?1, ?2, ?3, 0, ?4, ?5)
ON CONFLICT (id) DO UPDATE SET parent_id = coalesce(parent_id, excluded.parent_id),
    next_seq = max(next_seq, excluded.next_seq), first_at = min(first_at, excluded.first_at),
    last_at = max(last_at, excluded.last_at)
WHERE (parent_id IS NULL AND excluded.parent_id IS NOT NULL) OR next_seq < excluded.next_seq
    OR first_at > excluded.first_at OR last_at < excluded.last_at"""


def restore_conversation(conn: apsw.Connection, state: ConversationState) -> bool:
    """Bring a conversation's row up to ``state`` (see ``Transaction.restore_conversation``)."""
    conn.execute(
        _RESTORE_CONVERSATION,
        (state.id, state.parent_id, state.next_seq, state.first_at, state.last_at),
    )
    return bool(conn.changes())


class Commits:
    """Counts this connection's commits once someone watches (a commit hook)."""

    def __init__(self, conn: apsw.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self._lock = lock
        self.count = 0
        self.closed = False
        self.changed = threading.Condition()
        self._hooked = False

    def _committed(self) -> bool:
        with self.changed:
            self.count += 1
            self.changed.notify_all()
        return False  # let the commit go ahead

    def hook(self) -> None:
        with self._lock:
            if not self._hooked:
                self._conn.set_commit_hook(self._committed, id=self)
                self._hooked = True

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


class SQLiteWatch:
    """Wakes a follower when this process or another may have committed."""

    def __init__(self, commits: Commits, read: Callable[[Callable[[apsw.Connection], T]], T]):
        self._commits = commits
        self._read: Callable[[Callable[[apsw.Connection], Any]], Any] = read
        commits.hook()
        self._count = commits.count
        self._version = self._data_version()

    def _data_version(self) -> int:
        try:
            row = self._read(lambda c: c.execute("PRAGMA data_version").fetchone())
            return int(row[0])
        except apsw.Error:  # closed meanwhile: the follower finds out on its next read
            return -1

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        commits = self._commits
        while True:
            with commits.changed:
                if commits.count != self._count or commits.closed:
                    self._count = commits.count
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                commits.changed.wait(min(POLL, remaining))
                if commits.count != self._count or commits.closed:
                    self._count = commits.count
                    return True
            version = self._data_version()
            if version != self._version:
                self._version = version
                return True

    def close(self) -> None:
        pass
