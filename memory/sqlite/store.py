"""A SQLite database file as the terminal sees it: one connection, one writer at a time."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

import apsw

from anchorline.errors import StorageUnavailable
from anchorline.memory.retry import RetryPolicy

from . import crud
from .connection import connect
from .transaction import Transaction, call, run_in

T = TypeVar("T")

_HAS_MOVED = apsw.SQLITE_FCNTL_HAS_MOVED


class SQLiteStore:
    """The database at ``path``, opened with the retry ``policy``.

    The connection is shared by the threads of one pipeline, so a lock keeps
    one transaction (or read) on it at a time.

    Every write transaction first checks that ``path`` still names the file
    that is open: writes to a file deleted or replaced while open would be
    acknowledged and then lost, so they raise :class:`StorageUnavailable`.
    """

    def __init__(
        self,
        path: str,
        policy: RetryPolicy | None = None,
        *,
        vfs: str | None = None,
        durability: str = "normal",
    ):
        self.path = path
        self.policy = policy or RetryPolicy()
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

    def _has_moved(self) -> bool | None:
        """Whether ``path`` no longer names the open file; ``None`` if the VFS cannot tell."""
        if not self._file_control("main", _HAS_MOVED, self._moved_at):
            return None
        return bool(self._moved.value)

    def begin(self) -> Transaction:
        """Start a write transaction; commit or roll it back to let others in."""
        if self._watched:
            # Under the lock: apsw refuses a connection used by two threads at once.
            with self._lock:
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
        return Transaction(self.conn, self.policy, crud.landed, self._lock)

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

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        with self._lock:
            return call(self.policy, self.conn, fn)

    def close(self) -> None:
        with self._lock:
            if self._watched and self._has_moved():
                self._empty_wal()
            self.conn.close()
