"""A SQLite database file as a :class:`~anchorline.memory.interface.Store`: one
connection, one writer at a time."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

import apsw

from anchorline.errors import StorageUnavailable
from anchorline.memory.interface import ConversationState
from anchorline.memory.retry import RetryPolicy
from anchorline.results import (
    Change,
    Conversation,
    Message,
)

from . import changelog, crud
from .connection import connect
from .outbox import SQLiteOutbox
from .transaction import SQLiteTransaction, call, run_in

T = TypeVar("T")

_HAS_MOVED = apsw.SQLITE_FCNTL_HAS_MOVED
#: How many messages :meth:`SQLiteStore.complete_messages` reads at a time.
_PAGE = 1000


def _get_messages(conn: apsw.Connection, message_ids: Sequence[str]) -> list[Message]:
    found = (crud.get_message(conn, message_id) for message_id in message_ids)
    return [message for message in found if message is not None]


class SQLiteStore:
    """The database at ``path`` (or ``":memory:"``), written under the ``retry`` policy.

    The connection is shared by the threads of one pipeline, so a lock keeps
    one transaction (or read) on it at a time.

    Every write transaction first checks that ``path`` still names the file
    that is open: writes to a file deleted or replaced while open would be
    acknowledged and then lost, so they raise :class:`StorageUnavailable`.
    """

    def __init__(
        self,
        path: str,
        retry: RetryPolicy | None = None,
        *,
        vfs: str | None = None,
        durability: str = "normal",
    ):
        self.path = self.location = path
        self.policy = retry or RetryPolicy()
        self.vfs = vfs
        self.conn = connect(path, self.policy, vfs=vfs, durability=durability)
        # Re-entrant, so a nested write on the same thread fails with SQLite's
        # "transaction within a transaction" instead of deadlocking.
        self._lock = threading.RLock()
        # SQLite's own check (the path's inode against the open file's, about
        # 1 µs), answered only by a VFS that keeps the database in a file.
        self._moved = ctypes.c_int(0)
        self._moved_at = ctypes.addressof(self._moved)
        self._file_control = self.conn.file_control
        self._watched = path != ":memory:" and self._has_moved() is not None
        self.outbox = SQLiteOutbox(self)
        self._commits = changelog.Commits(self.conn, self._lock)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def _has_moved(self) -> bool | None:
        """Whether ``path`` no longer names the open file; ``None`` if the VFS cannot tell."""
        if not self._file_control("main", _HAS_MOVED, self._moved_at):
            return None
        return bool(self._moved.value)

    def begin(self) -> SQLiteTransaction:
        """Start a write transaction; commit or roll it back to let others in."""
        # The check runs under the transaction's hold of the lock: apsw refuses a
        # connection used by two threads at once.
        check = self._check_in_place if self._watched else None
        return SQLiteTransaction(self.conn, self.policy, crud.landed, self._lock, check)

    def _check_in_place(self) -> None:  # under the lock
        """Refuse to write if ``path`` no longer names the open file."""
        self._file_control("main", _HAS_MOVED, self._moved_at)
        if self._moved.value:
            self._empty_wal()
            raise StorageUnavailable(
                f"database {self.path} was deleted or replaced by another file while"
                " open, so writes to it would be lost: nothing was written; close the"
                " pipeline and reopen it (restore the file from a backup if it was"
                " deleted by mistake)",
                attempts=1,
                last_cause=None,
            )

    def _empty_wal(self) -> None:  # under the lock
        """Move what the WAL holds into the open (moved) file and truncate the WAL.

        The -wal file is found by name: left full, it would be replayed into
        whatever file now has the path. SQLite skips its checkpoint on close
        once the file has moved, so this one is explicit.
        """
        with contextlib.suppress(apsw.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` in a write transaction of its own and commit it."""
        return run_in(self.begin(), fn)

    def transact(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` in a transaction of its own, retried like :meth:`write`: for the
        outbox's bookkeeping, which writes no message (so it skips :meth:`begin`'s check
        that the file is still in place)."""
        return run_in(SQLiteTransaction(self.conn, self.policy, None, self._lock), fn)

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` on the connection, retried under the policy if SQLite is busy."""
        with self._lock:
            return call(self.policy, self.conn, fn)

    # --- reads --------------------------------------------------------------

    def get_message(self, message_id: str) -> Message | None:
        return self.read(partial(crud.get_message, message_id=message_id))

    def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        return self.read(partial(_get_messages, message_ids=message_ids))

    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> list[Message]:
        return self.read(
            partial(
                crud.list_messages,
                conversation_id=conversation_id,
                limit=limit,
                after_seq=after_seq,
                roles=roles,
            )
        )

    def list_reserved(self, updated_before: int, limit: int) -> list[Message]:
        return self.read(partial(crud.list_reserved, updated_before=updated_before, limit=limit))

    def complete_messages(self) -> Iterator[Message]:
        # Page by page, each in a read of its own: the lock is never held across a yield.
        after: str | None = None
        while True:
            page = self.read(partial(crud.list_complete, after_id=after, limit=_PAGE))
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].id

    def scan(self, after_id: str | None, limit: int) -> list[Message]:
        return self.read(partial(crud.scan, after_id=after_id, limit=limit))

    def scan_conversations(self, after_id: str | None, limit: int) -> list[ConversationState]:
        return self.read(partial(changelog.scan_conversations, after_id=after_id, limit=limit))

    # --- the conversation log ---------------------------------------------------

    def changes(self, after: int, limit: int) -> list[Change]:
        return self.read(partial(changelog.list_changes, after=after, limit=limit))

    def last_cursor(self) -> int:
        return self.read(changelog.last_cursor)

    def trim_changes(self, before: int) -> int:
        return self.transact(partial(changelog.trim_changes, before=before))

    def watch(self) -> changelog.SQLiteWatch:
        return changelog.SQLiteWatch(self._commits, self.read)

    def conversations(
        self, limit: int | None, after: tuple[int, str] | None, parent_id: str | None
    ) -> list[Conversation]:
        return self.read(
            partial(changelog.list_conversations, limit=limit, after=after, parent_id=parent_id)
        )

    def close(self) -> None:
        self._commits.close()
        with self._lock:
            if self._watched and self._has_moved():
                self._empty_wal()
            self.conn.close()
