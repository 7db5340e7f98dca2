"""Write transactions and reads that survive a dropped connection or a server restart.

A :class:`PostgresTransaction` holds one pooled connection for its life and
keeps a journal of its writes. When a statement fails in a way another attempt
may pass (serialization failure, deadlock, lock timeout, the connection dropped,
the server shut down or restarted), the connection is rolled back, or closed and
given up if it is broken (a broken connection never goes back to the pool), and
the whole journal is replayed on a fresh connection under the
:class:`~anchorline.memory.retry.RetryPolicy`. The caller fixed every write's id
and time before the first attempt, so a replay writes the same rows.

A COMMIT whose connection dropped may or may not have committed. Before
replaying after such a COMMIT, :func:`~.crud.landed` asks whether the writes
are there; if they are, the commit is done.

Past the policy's deadline or attempts, the error is a one-line
:class:`StorageUnavailable` naming the server (never its password); any other
database error is one too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg
import psycopg_pool
from psycopg import ClientCursor

from anchorline.errors import AnchorlineError, StorageUnavailable
from anchorline.memory.interface import ConversationState
from anchorline.memory.journal import Attempts, Corrections, Journal
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
from .changelog import FEED, FEED_ONE, feed_params
from .connection import Connections
from .errors import gave_up, keeps_connection, retryable, storage_error

T = TypeVar("T")
Write = Callable[[crud.Executes], Any]


class Host(Protocol):
    """What a transaction needs of its store."""

    policy: RetryPolicy
    connections: Connections
    where: str

    def queued(self) -> None:
        """Called after a commit that may have queued work for the index."""

    def logged(self) -> None:
        """Called after a commit that wrote change feed rows."""


def again(host: Host, attempts: Attempts, error: BaseException) -> None:
    """Pause before the next attempt after ``error``, or raise if there is none: a
    one-line :class:`StorageUnavailable` naming the server."""
    if not retryable(error):
        raise storage_error(error, host.where) from None
    if not attempts.again():
        probe = host.connections.probe() if isinstance(error, psycopg_pool.PoolTimeout) else None
        raise gave_up(error, host.where, attempts.count, attempts.elapsed(), probe) from None


def connection(host: Host, attempts: Attempts) -> psycopg.Connection[Any]:
    """A pooled connection, waiting for one no longer than the deadline allows."""
    return host.connections.get(attempts.remaining())


def let_go(host: Host, conn: psycopg.Connection[Any] | None) -> None:
    """Hand back ``conn`` after an error: rolled back if it is healthy, else closed."""
    if conn is None:
        return
    if not (conn.closed or conn.broken):
        try:
            conn.rollback()
        except psycopg.Error:
            pass
        else:
            host.connections.put(conn)
            return
    host.connections.discard(conn)


def read(host: Host, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
    """Run the read ``fn`` on a pooled connection, retried under the host's policy."""
    attempts = Attempts(host.policy)
    while True:
        conn = None
        try:
            conn = connection(host, attempts)
            result = fn(conn)
        except psycopg.Error as e:
            let_go(host, conn)
            again(host, attempts, e)
            continue
        except AnchorlineError:
            let_go(host, conn)  # a refusal of ours (CursorExpired): the connection is fine
            raise
        except BaseException:
            if conn is not None:
                host.connections.discard(conn)  # in an unknown state
            raise
        host.connections.put(conn)
        return result


def _finish(session: crud.Session) -> None:
    """Commit the attempt: its change feed rows and the COMMIT in one message when it
    wrote any (see ``changelog``: this is what makes cursor order commit order)."""
    if not session.changes:
        session.conn.commit()
        return
    if len(session.changes) == 1:
        ClientCursor(session.conn).execute(FEED_ONE, session.changes[0])
    else:
        ClientCursor(session.conn).execute(FEED, feed_params(session.changes))


class PostgresTransaction:
    """One write transaction of a :class:`~.store.PostgresStore` (the ``Transaction``
    protocol). Not for sharing between threads: each thread begins its own."""

    __slots__ = (
        "_conn", "_failed", "_host", "_journal", "_queued", "_session", "_sole", "_started",
    )  # fmt: skip

    def __init__(self, host: Host, *, sole: bool = False) -> None:
        self._host = host
        # Whether the transaction holds one write, committed right after it: an add, a
        # reserve or a content update then commits as it is written (crud.Session).
        self._sole = sole
        self._started = time.monotonic()
        self._journal = Journal()
        self._failed = False
        self._queued = False  # whether a write may have queued index work
        self._conn: psycopg.Connection[Any] | None = None
        self._session: crud.Session | None = None
        attempts: Attempts | None = None
        while self._conn is None:
            try:
                self._attach(
                    host.connections.get(self._started + host.policy.deadline - time.monotonic())
                )
            except psycopg.Error as e:
                attempts = attempts or Attempts(host.policy, self._started)
                again(host, attempts, e)

    def _attach(self, conn: psycopg.Connection[Any]) -> crud.Session:
        self._conn = conn
        # A replay takes the usual way: it must first learn whether the write landed.
        self._session = crud.Session(conn, sole=self._sole and not self._journal.writes)
        return self._session

    # --- the Transaction protocol ---------------------------------------------

    def add(self, op: Add, *, message_id: str, now: int) -> Added:
        """Write a complete message (see the ``Transaction`` protocol)."""
        result: Added = self.run(
            lambda db: crud.add_message(db, op, message_id=message_id, now=now), queues=True
        )
        return result

    def add_many(
        self, ops: Sequence[Add], *, message_ids: Sequence[str], nows: Sequence[int]
    ) -> list[Added]:
        """Write complete messages in one pipelined ``executemany``; each result as
        :meth:`add`'s."""
        results: list[Added] = self.run(
            lambda db: crud.add_messages(db, ops, message_ids, nows), queues=True
        )
        return results

    def reserve(self, op: Reserve, *, message_id: str, now: int) -> Reserved:
        """Write an empty placeholder (content ``[]``, status ``reserved``)."""
        result: Reserved = self.run(
            lambda db: crud.reserve_message(db, op, message_id=message_id, now=now)
        )
        return result

    def update_content(
        self, op: UpdateContent, *, now: int, expected: int | None
    ) -> ContentUpdated:
        """Replace the content; ``expected`` is the caller's ``updated_at`` guard."""
        result: ContentUpdated = self.run(
            lambda db: crud.update_message_content(db, op, now=now, expected=expected),
            queues=op.final,
            landed=lambda db: crud.content_landed(db, op, now),
        )
        return result

    def update(self, op: Update, *, now: int, expected: int | None) -> Updated:
        """Shallow-merge the op's metadata into the stored metadata."""
        result: Updated = self.run(
            lambda db: crud.update_message_metadata(db, op, now=now, expected=expected),
            queues=True,
        )
        return result

    def delete(self, op: Delete, *, expected: int | None) -> Deleted:
        """Delete the message; an unknown id gives ``existed=False``."""
        result: Deleted = self.run(
            lambda db: crud.delete_message(db, op, expected=expected), queues=True
        )
        return result

    def restore(self, message: Message) -> bool:
        """Write ``message`` exactly as given unless its id is already stored."""
        written: bool = self.run(
            lambda db: crud.restore_message(db, message), queues=message.status == "complete"
        )
        return written

    def restore_conversation(self, state: ConversationState) -> bool:
        """Bring the conversation's row up to ``state`` (see the ``Transaction`` protocol)."""
        changed: bool = self.run(lambda db: changelog.restore_conversation(db, state))
        return changed

    def forget(self, op: Forget) -> Forgotten:
        """Delete every message of the conversation (see the ``Transaction`` protocol)."""
        result: Forgotten = self.run(lambda db: crud.forget_conversation(db, op), queues=True)
        return result

    def compact(self, op: Compact, *, message_id: str, now: int) -> Compacted:
        """Write the compaction row (see the ``Transaction`` protocol)."""
        result: Compacted = self.run(
            lambda db: crud.compact_conversation(db, op, message_id=message_id, now=now),
            queues=True,
        )
        return result

    def commit(self) -> Corrections:
        """Commit, retrying under the policy; on failure roll back and raise. Returns the
        results a replay stored differently from what the writes handed out."""
        try:
            if self._failed:
                raise StorageUnavailable(
                    "transaction not committed: an earlier write in it failed"
                    f" ({self._host.where})",
                    attempts=1,
                    last_cause=None,
                )
            assert self._session is not None, "commit of a transaction that has ended"
            try:
                if not self._session.committed:
                    _finish(self._session)
            except psycopg.Error as e:
                self._retry(e, commit=True)
        except BaseException:
            self._abort()
            raise
        wrote = self._wrote
        self._release()
        if self._queued:
            self._host.queued()
        if wrote:
            self._host.logged()
        return self._journal.corrections()

    def rollback(self) -> None:
        """Drop every write of the transaction and give its connection back."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()
        except psycopg.Error:
            # The server ends a transaction whose connection dropped: nothing to undo.
            self._conn = self._session = None
            self._host.connections.discard(conn)
            return
        self._release()

    # --- the journal ------------------------------------------------------------

    def run(
        self,
        fn: Write,
        *,
        queues: bool = False,
        landed: Callable[[crud.Executes], Any] | None = None,
    ) -> Any:
        """Apply ``fn`` in the transaction, keep it for a replay, and return its result.

        ``landed`` tells, after a write sent as its own transaction whose answer was
        lost, whether it committed: its result if so, else ``None`` (without it, the
        replay of ``fn`` must find out by itself, as an add's does).
        """
        if self._session is not None and self._session.committed:
            raise RuntimeError(
                "this transaction took its one write and committed it (begin_sole):"
                " begin another for the next"
            )
        if self._failed or self._session is None:
            raise StorageUnavailable(
                f"transaction not usable: an earlier write in it failed, or it ended"
                f" ({self._host.where})",
                attempts=1,
                last_cause=None,
            )
        journal = self._journal
        journal.writes.append(fn)
        try:
            result = fn(self._session)
        except AnchorlineError:
            # Refused (Conflict, MessageNotFound) before it wrote anything: a replay of
            # the rest of the transaction must not run it again.
            journal.refused()
            raise
        except psycopg.Error as e:
            try:
                if self._session is not None and self._session.sent_sole:
                    result = self._retry(e, commit=True, landed=landed)
                else:
                    result = self._retry(e, commit=False)
            except BaseException:
                self._failed = True
                raise
            journal.handed_out(result)
        except BaseException:
            self._failed = True
            raise
        else:
            journal.wrote(result)
        self._queued = self._queued or queues
        return result

    def _retry(
        self,
        error: psycopg.Error,
        *,
        commit: bool,
        landed: Callable[[crud.Executes], Any] | None = None,
    ) -> Any:
        """Replay the journal on a fresh attempt until it passes or the policy gives up.

        ``commit``: the failure was in a COMMIT, or in a write sent as its own
        transaction (then ``landed`` may tell whether it went through).
        """
        journal, host = self._journal, self._host
        attempts = Attempts(host.policy, self._started)
        ambiguous = False  # whether a COMMIT may have committed although it failed
        while True:
            ambiguous = ambiguous or (commit and not keeps_connection(error))
            let_go(host, self._conn)
            self._conn = self._session = None
            again(host, attempts, error)
            try:
                conn = connection(host, attempts)
                session = self._attach(conn)
                if ambiguous:
                    if landed is not None:
                        result = landed(conn)
                        if result is not None:
                            session.committed = True
                            journal.results = [result]
                            return result
                    elif crud.landed(conn, journal.results):
                        session.committed = True  # nothing is left to commit
                        return None
                result = journal.replay(session)
                if commit:
                    _finish(session)
                    session.committed = True
                return result
            except psycopg.Error as e:
                error = e

    @property
    def _wrote(self) -> bool:
        session = self._session
        return session is not None and (bool(session.changes) or session.committed)

    def _release(self) -> None:
        conn, self._conn, self._session = self._conn, None, None
        if conn is not None:
            self._host.connections.put(conn)

    def _abort(self) -> None:
        """Roll back after a failure without masking it; the connection is handed back."""
        try:
            self.rollback()
        except Exception:
            conn, self._conn, self._session = self._conn, None, None
            if conn is not None:
                self._host.connections.discard(conn)
