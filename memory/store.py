"""A SQLite database file as the terminal sees it: one connection, one writer at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import apsw

from . import crud
from .connection import connect
from .retry import RetryPolicy, Transaction, run_in

T = TypeVar("T")


class SQLiteStore:
    """The database at ``path``, opened with the retry ``policy``.

    The connection is shared by the threads of one pipeline, so a lock keeps
    one transaction (or read) on it at a time.
    """

    def __init__(self, path: str, policy: RetryPolicy | None = None, *, vfs: str | None = None):
        self.path = path
        self.policy = policy or RetryPolicy()
        self.vfs = vfs
        self.conn = connect(path, self.policy, vfs=vfs)
        # Re-entrant, so a nested write on the same thread fails with SQLite's
        # "transaction within a transaction" instead of deadlocking.
        self._lock = threading.RLock()

    def begin(self) -> Transaction:
        """Start a write transaction; commit or roll it back to let others in."""
        return Transaction(self.conn, self.policy, crud.landed, self._lock)

    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` in a write transaction of its own and commit it."""
        return run_in(self.begin(), fn)

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        with self._lock:
            return self.policy.call(self.conn, fn)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
