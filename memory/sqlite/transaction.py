"""The SQLite write transaction: one ``BEGIN IMMEDIATE`` that survives a busy database,
retried under the policy and replayed from its journal (``anchorline.memory.journal``);
and the retried read."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import apsw

from anchorline.errors import AnchorlineError, StorageUnavailable
from anchorline.memory.interface import ConversationState
from anchorline.memory.journal import Attempts, Corrections, Journal, settled
from anchorline.memory.retry import RetryPolicy
from anchorline.ops import Add, Compact, Delete, Forget, Reserve, Update, UpdateContent
from anchorline.results import (
    Added,
    Compacted,
    ContentUpdated,
    Deleted,
    Forgotten,
    Message,
    Reserved,
    Updated,
)

from . import changelog, crud
from .errors import RETRYABLE, explain, filename, named, reraise, storage_error

T = TypeVar("T")


def call(policy: RetryPolicy, conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """Run a read (or any idempotent call) on ``conn`` under ``policy``."""
    try:
        return fn(conn)
    except RETRYABLE as e:
        try:
            return _until_done(Attempts(policy), conn, e, lambda: fn(conn))
        except apsw.Error as failure:
            reraise(failure, conn)
    except apsw.Error as e:
        reraise(e, conn)


def _until_done(
    attempts: Attempts, conn: apsw.Connection, error: BaseException, attempt: Callable[[], T]
) -> T:
    """Roll back after ``error`` and call ``attempt`` again until it passes or the policy
    gives up (:class:`StorageUnavailable`); each attempt waits for the lock no longer than
    the deadline leaves."""
    policy = attempts.policy
    while True:
        if conn.in_transaction:
            # SQLite rolls back on its own after most I/O errors.
            with contextlib.suppress(*RETRYABLE):
                conn.execute("ROLLBACK")
        if not attempts.again():
            raise StorageUnavailable(
                f"storage unavailable after {attempts.count} attempt(s) in"
                f" {attempts.elapsed():.2f}s: {explain(error, conn)}",
                attempts=attempts.count,
                last_cause=error,
            ) from error
        conn.set_busy_timeout(int(max(1.0, min(policy.busy_timeout, attempts.remaining()) * 1000)))
        try:
            return attempt()
        except RETRYABLE as e:
            error = e
        finally:
            conn.set_busy_timeout(policy.busy_timeout_ms)


class SQLiteTransaction:
    """One write transaction of a :class:`~.store.SQLiteStore` (the ``Transaction``
    protocol): a ``BEGIN IMMEDIATE`` that survives busy and I/O errors.

    Every write runs through :meth:`run`, which keeps it in the journal, as a
    closure over the op and its fixed id and time. When an attempt fails with a
    retryable error the transaction is rolled back and the whole journal replayed
    in a fresh one, so a multi-op unit of work commits all of its ops or none.

    A ``COMMIT`` can report an error although the transaction reached the disk.
    Before replaying after such an error, ``landed(conn, results)`` is asked
    whether the writes are already there; if so, the commit is done.

    Every way out releases ``lock`` exactly once: :meth:`commit` and
    :meth:`rollback` always end the transaction, and a failed begin, write or
    commit rolls back whatever SQLite left open. Storage errors come out as
    :class:`StorageUnavailable`.
    """

    __slots__ = ("_conn", "_failed", "_journal", "_landed", "_lock", "_policy", "_started")

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
        self._journal = Journal()
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

    # --- the Transaction protocol ---------------------------------------------

    def add(self, op: Add, *, message_id: str, now: int) -> Added:
        return self.run(lambda c: crud.add_message(c, op, message_id=message_id, now=now))

    def add_many(
        self, ops: Sequence[Add], *, message_ids: Sequence[str], nows: Sequence[int]
    ) -> list[Added]:
        """Write complete messages (one ``executemany``); each result as :meth:`add`'s."""
        return self.run(lambda c: crud.add_messages(c, ops, message_ids, nows))

    def reserve(self, op: Reserve, *, message_id: str, now: int) -> Reserved:
        return self.run(lambda c: crud.reserve_message(c, op, message_id=message_id, now=now))

    def update_content(
        self, op: UpdateContent, *, now: int, expected: int | None
    ) -> ContentUpdated:
        return self.run(
            lambda c: crud.update_message_content(c, op, now=now, expect_updated_at=expected)
        )

    def update(self, op: Update, *, now: int, expected: int | None) -> Updated:
        return self.run(
            lambda c: crud.update_message_metadata(c, op, now=now, expect_updated_at=expected)
        )

    def delete(self, op: Delete, *, expected: int | None) -> Deleted:
        return self.run(lambda c: crud.delete_message(c, op, expect_updated_at=expected))

    def restore(self, message: Message) -> bool:
        return self.run(lambda c: crud.restore_message(c, message)) is not None

    def restore_conversation(self, state: ConversationState) -> bool:
        return self.run(lambda c: changelog.restore_conversation(c, state))

    def forget(self, op: Forget) -> Forgotten:
        return self.run(lambda c: crud.forget_conversation(c, op))

    def compact(self, op: Compact, *, message_id: str, now: int) -> Compacted:
        return self.run(lambda c: crud.compact_conversation(c, op, message_id=message_id, now=now))

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
        return self._journal.corrections()

    def rollback(self) -> None:
        """Undo every write of the transaction and let other threads in."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except apsw.Error as e:
            raise storage_error(e, filename(self._conn)) from e
        finally:
            self._release()

    # --- the journal ------------------------------------------------------------

    def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Apply ``fn(conn)`` inside the transaction, keep it for a replay, and return
        what it returns."""
        journal = self._journal
        journal.writes.append(fn)
        try:
            result: T = fn(self._conn)
        except RETRYABLE as e:
            try:
                result = self._retry(e, commit=False)
            except BaseException as failure:
                self._failed = True
                reraise(failure, self._conn)
            journal.handed_out(result)
            return result
        except apsw.Error as e:
            # A statement failed part-way through the op: never commit what it left.
            self._failed = True
            raise storage_error(e, filename(self._conn)) from e
        except AnchorlineError:
            # Refused (Conflict, MessageNotFound) before it wrote anything: a replay of
            # the rest of the transaction must not run it again.
            journal.refused()
            raise
        except BaseException:
            self._failed = True  # what the write left is unknown: never commit it
            raise
        journal.wrote(result)
        return result

    def _retry(self, error: BaseException, *, commit: bool) -> Any:
        journal, conn = self._journal, self._conn

        def replay() -> Any:
            if commit and self._landed is not None and self._landed(conn, journal.results):
                return journal.results[-1] if journal.results else None
            conn.execute("BEGIN IMMEDIATE")
            result = journal.replay(conn)
            if commit:
                conn.execute("COMMIT")
            return result

        return _until_done(Attempts(self._policy, self._started), conn, error, replay)

    def _abort(self) -> None:
        """Roll back after a failure, never masking it: the lock is released whatever happens."""
        with contextlib.suppress(apsw.Error):
            self.rollback()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def run_in(tx: SQLiteTransaction, fn: Callable[[apsw.Connection], T]) -> T:
    """Run ``fn`` in the new transaction ``tx`` and commit it, or roll back on error; what
    ``fn`` returned in the attempt that committed."""
    try:
        result = tx.run(fn)
    except BaseException:
        tx._abort()
        raise
    return settled(result, tx.commit())
