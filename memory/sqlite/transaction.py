"""The SQLite transaction that survives a busy database: retried under the policy, replayed
from its journal."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import apsw

from anchorline.errors import AnchorlineError, StorageUnavailable
from anchorline.memory.journal import NONE, Corrections, corrections, settled
from anchorline.memory.retry import RetryPolicy

from .errors import RETRYABLE, explain, filename, named, reraise, storage_error

T = TypeVar("T")


def call(policy: RetryPolicy, conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """Run a read (or any idempotent call) on ``conn`` under ``policy``."""
    try:
        return fn(conn)
    except RETRYABLE as e:
        try:
            return _Retry(policy, conn).until_done(e, lambda: fn(conn))
        except apsw.Error as failure:
            reraise(failure, conn)
    except apsw.Error as e:
        reraise(e, conn)


class _Retry:
    """The retry loop shared by reads and write transactions."""

    __slots__ = ("attempts", "conn", "policy", "started")

    def __init__(self, policy: RetryPolicy, conn: apsw.Connection, started: float | None = None):
        self.policy = policy
        self.conn = conn
        self.started = time.monotonic() if started is None else started
        self.attempts = 1

    def until_done(self, error: BaseException, attempt: Callable[[], T]) -> T:
        policy = self.policy
        while True:
            if self.conn.in_transaction:
                # SQLite rolls back on its own after most I/O errors.
                with contextlib.suppress(*RETRYABLE):
                    self.conn.execute("ROLLBACK")
            remaining = self.started + policy.deadline - time.monotonic()
            pause = policy.backoff(self.attempts)
            if self.attempts >= policy.max_attempts or remaining <= pause:
                raise StorageUnavailable(
                    f"storage unavailable after {self.attempts} attempt(s) in"
                    f" {time.monotonic() - self.started:.2f}s: {explain(error, self.conn)}",
                    attempts=self.attempts,
                    last_cause=error,
                ) from error
            time.sleep(pause)
            self.attempts += 1
            budget = self.started + policy.deadline - time.monotonic()
            self.conn.set_busy_timeout(int(max(1.0, min(policy.busy_timeout, budget) * 1000)))
            try:
                return attempt()
            except RETRYABLE as e:
                error = e
            finally:
                self.conn.set_busy_timeout(policy.busy_timeout_ms)


class Transaction:
    """One ``BEGIN IMMEDIATE`` transaction that survives busy and I/O errors.

    Every write runs through :meth:`run`, which keeps it in a journal. When an
    attempt fails with a retryable error the transaction is rolled back and the
    whole journal replayed in a fresh one, so a multi-op unit of work commits
    all of its ops or none. Writes must be deterministic (ids and timestamps are
    fixed before the first attempt) for the replay to write the same rows.

    A ``COMMIT`` can report an error although the transaction reached the
    disk. Before replaying after such an error, ``landed(conn, results)`` is
    asked whether the writes are already there; if so, the commit is done.

    Every way out releases ``lock`` exactly once: :meth:`commit` and
    :meth:`rollback` always end the transaction, and a failed begin, write or
    commit rolls back whatever SQLite left open. Storage errors come out as
    :class:`StorageUnavailable`.
    """

    __slots__ = (
        "_conn", "_failed", "_given", "_journal", "_landed", "_lock", "_policy", "_results",
        "_started",
    )  # fmt: skip

    def __init__(
        self,
        conn: apsw.Connection,
        policy: RetryPolicy,
        landed: Callable[[apsw.Connection, list[Any]], bool] | None = None,
        lock: threading.RLock | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        # ``lock`` keeps other threads of the process off the connection until
        # the transaction ends; ``check`` runs under it before the BEGIN, and
        # raising refuses the transaction.
        if lock is not None:
            lock.acquire()
        self._lock = lock
        self._conn = conn
        self._policy = policy
        self._landed = landed
        self._journal: list[Callable[[apsw.Connection], Any]] = []
        self._results: list[Any] = []
        # What each write handed out, kept apart from ``_results`` once a replay may
        # have made them differ (see ``journal``).
        self._given: list[Any] | None = None
        self._started = time.monotonic()
        self._failed = False
        try:
            if check is not None:
                check()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except RETRYABLE as e:
                self._retry(e, commit=False)
        except BaseException as e:
            # No ROLLBACK: this BEGIN failed, and a nested one on the same thread
            # must leave the outer transaction alone.
            self._release()
            reraise(e, conn)

    def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Apply ``fn(conn)`` inside the transaction and return what it returns."""
        self._journal.append(fn)
        try:
            result: T = fn(self._conn)
        except RETRYABLE as e:
            self._results.append(None)
            try:
                result = self._retry(e, commit=False)
            except BaseException as failure:
                self._failed = True
                reraise(failure, self._conn)
            assert self._given is not None
            self._given[-1] = result
            return result
        except apsw.Error as e:
            # A statement failed part-way through the op: never commit what it left.
            self._failed = True
            raise storage_error(e, filename(self._conn)) from e
        except AnchorlineError:
            # Refused (Conflict, MessageNotFound) before it wrote anything: a replay of
            # the rest of the transaction must not run it again.
            self._journal.pop()
            raise
        self._results.append(result)
        if self._given is not None:
            self._given.append(result)
        return result

    def commit(self) -> Corrections:
        """Commit, retrying under the policy; on failure roll back and raise. Returns the
        results a replay stored differently from what the writes handed out."""
        try:
            if self._failed:
                raise StorageUnavailable(
                    "transaction not committed: an earlier write in it failed"
                    f" ({named(filename(self._conn))})",
                    attempts=1,
                    last_cause=None,
                )
            try:
                self._conn.execute("COMMIT")
            except RETRYABLE as e:
                self._retry(e, commit=True)
        except BaseException as e:
            self._abort()
            reraise(e, self._conn)
        self._release()
        return NONE if self._given is None else corrections(self._given, self._results)

    def rollback(self) -> None:
        """Undo every write of the transaction and let other threads in."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except apsw.Error as e:
            raise storage_error(e, filename(self._conn)) from e
        finally:
            self._release()

    def _abort(self) -> None:
        """Roll back after a failure, never masking it: the lock is released whatever happens."""
        with contextlib.suppress(apsw.Error):
            self.rollback()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _retry(self, error: BaseException, *, commit: bool) -> Any:
        if self._given is None:
            self._given = list(self._results)

        def replay() -> Any:
            if commit and self._landed is not None and self._landed(self._conn, self._results):
                return self._results[-1] if self._results else None
            self._conn.execute("BEGIN IMMEDIATE")
            for i, fn in enumerate(self._journal):
                self._results[i] = fn(self._conn)
            if commit:
                self._conn.execute("COMMIT")
            return self._results[-1] if self._results else None

        return _Retry(self._policy, self._conn, self._started).until_done(error, replay)


def write(conn: apsw.Connection, policy: RetryPolicy, fn: Callable[[apsw.Connection], T]) -> T:
    """Run ``fn`` in a transaction of its own under ``policy`` and commit it."""
    return run_in(Transaction(conn, policy), fn)


def run_in(tx: Transaction, fn: Callable[[apsw.Connection], T]) -> T:
    """Run ``fn`` in the new transaction ``tx`` and commit it, or roll back on error."""
    try:
        result = tx.run(fn)
    except BaseException:
        tx._abort()
        raise
    return settled(result, tx.commit())
