"""The index outbox: intents to index, written by triggers with each message write.

A drainer claims a batch under a lease (so two drainers never work on the same
message at once), does the index work, and then deletes each item only if it
was not re-queued meanwhile (its ``seq`` is unchanged). A failed item keeps
its place with an attempt count, the error, and a time before which it is not
tried again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol, TypeVar, cast

import apsw

from anchorline.memory.interface import TEXTLESS_KEY, OutboxCounts, OutboxItem, backoff_ms
from anchorline.results import IndexStatus

from .schema import enable_index

T = TypeVar("T")


class Host(Protocol):
    """What the outbox needs of its store."""

    location: str

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` on the store's connection."""

    def transact(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn`` in a transaction of its own."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


Statements = Sequence[tuple[str, tuple[object, ...]]]


def execute(conn: apsw.Connection, statements: Statements) -> None:
    """Run ``statements`` in the transaction ``conn`` is in."""
    for sql, args in statements:
        conn.execute(sql, args)


def claim(
    conn: apsw.Connection, *, now: int, limit: int, lease_ms: int, force: bool
) -> list[OutboxItem]:
    """Lease up to ``limit`` items due at ``now``, oldest first; ``force`` ignores backoff."""
    due = "" if force else "AND next_attempt_at <= ?1"
    rows = conn.execute(
        f"""UPDATE index_outbox SET lease_until = ?1 + ?2
            WHERE message_id IN (
                SELECT message_id FROM index_outbox WHERE lease_until <= ?1 {due}
                ORDER BY enqueued_at LIMIT ?3)
            RETURNING message_id, action, seq, attempts""",
        (now, lease_ms, limit),
    ).fetchall()
    return [OutboxItem(*cast(tuple[str, str, int, int], row)) for row in rows]


def has_due(conn: apsw.Connection, force: bool = False) -> bool:
    """Whether any item is ready to be claimed (a read: no write lock taken)."""
    due = "" if force else "AND next_attempt_at <= ?1"
    row = conn.execute(
        f"SELECT 1 FROM index_outbox WHERE lease_until <= ?1 {due} LIMIT 1", (now_ms(),)
    ).fetchone()
    return row is not None


def done_statements(items: Sequence[OutboxItem], textless: int = 0) -> Statements:
    """Remove finished items, unless they were re-queued while being worked on.

    ``textless`` is added to the count of complete messages without text (see
    :func:`textless_count`), in the same transaction.
    """
    return (
        [
            ("DELETE FROM index_outbox WHERE message_id = ? AND seq = ?", (i.message_id, i.seq))
            for i in items
        ]
        + [
            ("UPDATE index_outbox SET lease_until = 0 WHERE message_id = ?", (i.message_id,))
            for i in items
        ]
        + ([(_ADD_TEXTLESS, (textless,))] if textless else [])
    )


def failed_statements(items: Sequence[OutboxItem], error: str) -> Statements:
    """Keep failed items, counting the attempt and scheduling the next one."""
    now = now_ms()
    return [
        (
            """UPDATE index_outbox SET attempts = attempts + 1, last_error = ?,
                   next_attempt_at = ?, lease_until = 0
               WHERE message_id = ? AND seq = ?""",
            (error, now + backoff_ms(i.attempts + 1), i.message_id, i.seq),
        )
        for i in items
    ] + [
        ("UPDATE index_outbox SET lease_until = 0 WHERE message_id = ?", (i.message_id,))
        for i in items
    ]


def status(conn: apsw.Connection) -> IndexStatus:
    counts = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE attempts > 0) FROM index_outbox"
    ).fetchone()
    pending, failing = counts if counts else (0, 0)
    oldest = conn.execute(
        "SELECT message_id, enqueued_at FROM index_outbox ORDER BY enqueued_at LIMIT 1"
    ).fetchone()
    error = conn.execute(
        "SELECT last_error FROM index_outbox WHERE last_error IS NOT NULL"
        " ORDER BY next_attempt_at DESC LIMIT 1"
    ).fetchone()
    return IndexStatus(
        pending=pending,
        failing=failing,
        oldest_message_id=oldest[0] if oldest else None,
        oldest_enqueued_at=oldest[1] if oldest else None,
        last_error=error[0] if error else None,
    )


# Complete messages whose text is empty have no point, so the index holds
# fewer points than there are complete messages. The indexer keeps their
# number here, to compare counts on open without reading every message.
_ADD_TEXTLESS = f"""INSERT INTO anchorline_meta VALUES ('{TEXTLESS_KEY}', max(0, ?1))
    ON CONFLICT (key) DO UPDATE SET value = max(0, CAST(value AS INTEGER) + ?1)"""


def textless_count(conn: apsw.Connection) -> int:
    """How many complete messages were last seen without text to index."""
    row = conn.execute(
        "SELECT value FROM anchorline_meta WHERE key = ?", (TEXTLESS_KEY,)
    ).fetchone()
    return int(row[0]) if row else 0


def set_textless_count(conn: apsw.Connection, count: int) -> None:
    conn.execute("INSERT OR REPLACE INTO anchorline_meta VALUES (?, ?)", (TEXTLESS_KEY, str(count)))


def counts(conn: apsw.Connection) -> OutboxCounts:
    # All messages minus the reserved ones: both counts are answered from indexes.
    row = conn.execute(
        """SELECT (SELECT count(*) FROM messages)
                  - (SELECT count(*) FROM messages WHERE status = 'reserved'),
                  (SELECT count(*) FROM index_outbox WHERE action != 'delete')"""
    ).fetchone()
    complete, pending = row if row else (0, 0)
    return OutboxCounts(complete=complete, pending=pending, textless=textless_count(conn))


def pending_ids(conn: apsw.Connection) -> set[str]:
    """The ids of the messages with an item waiting."""
    return {row[0] for row in conn.execute("SELECT message_id FROM index_outbox")}


def unqueued_complete(conn: apsw.Connection) -> list[str]:
    """The ids of complete messages with nothing waiting in the outbox."""
    return [
        row[0]
        for row in conn.execute(
            """SELECT id FROM messages WHERE status = 'complete'
               AND id NOT IN (SELECT message_id FROM index_outbox)"""
        )
    ]


def enqueue(conn: apsw.Connection, message_ids: Sequence[str]) -> None:
    """Queue these messages for indexing, leaving items already waiting as they are."""
    now = now_ms()
    conn.executemany(
        """INSERT INTO index_outbox (message_id, action, enqueued_at) VALUES (?, 'upsert', ?)
           ON CONFLICT (message_id) DO NOTHING""",
        [(m, now) for m in message_ids],
    )


def enqueue_missing(conn: apsw.Connection) -> int:
    """Queue every complete message not already waiting; returns how many were queued.

    For an index found empty: items already waiting keep their place and backoff.
    Run inside a transaction.
    """
    conn.execute(
        """INSERT INTO index_outbox (message_id, action, enqueued_at)
           SELECT id, 'upsert', ? FROM messages WHERE status = 'complete'
           ON CONFLICT (message_id) DO NOTHING""",
        (now_ms(),),
    )
    queued = conn.changes()
    set_textless_count(conn, 0)  # counted again as the queued messages are indexed
    return queued


def enqueue_all(conn: apsw.Connection) -> None:
    """Queue every complete message for (re)indexing; run inside a transaction."""
    conn.execute(
        """INSERT INTO index_outbox (message_id, action, enqueued_at)
           SELECT id, 'upsert', ? FROM messages WHERE status = 'complete'
           ON CONFLICT (message_id) DO UPDATE SET action = 'upsert', seq = seq + 1,
               attempts = 0, last_error = NULL, next_attempt_at = 0""",
        (now_ms(),),
    )
    set_textless_count(conn, 0)


def requeue(conn: apsw.Connection, message_ids: Sequence[str], textless: int) -> None:
    """Queue ``message_ids`` and set the count of textless messages; run inside a transaction."""
    enqueue(conn, message_ids)
    set_textless_count(conn, textless)


# A reindex in progress is recorded, so that one interrupted resumes.
_REINDEX_KEY = "reindex"


def reindex_started(conn: apsw.Connection) -> bool:
    query = "SELECT 1 FROM anchorline_meta WHERE key = ?"
    return conn.execute(query, (_REINDEX_KEY,)).fetchone() is not None


def start_reindex(conn: apsw.Connection) -> None:
    """Queue every complete message and record the reindex; run inside a transaction."""
    enqueue_all(conn)
    conn.execute("INSERT OR REPLACE INTO anchorline_meta VALUES (?, 'started')", (_REINDEX_KEY,))


def finish_reindex(conn: apsw.Connection) -> None:
    conn.execute("DELETE FROM anchorline_meta WHERE key = ?", (_REINDEX_KEY,))


class SQLiteOutbox:
    """The outbox of a :class:`~anchorline.memory.sqlite.store.SQLiteStore`.

    Its intents are written by triggers (see ``schema.INDEX_TRIGGERS``). SQLite
    cannot tell one process of another's commits, so :meth:`wait` sleeps until
    its timeout unless :meth:`wake` is called: a drainer finds the writes of
    other processes within one wait, and its own at once.
    """

    def __init__(self, store: Host) -> None:
        self._store = store
        self._woken = threading.Event()

    def __repr__(self) -> str:
        return f"SQLiteOutbox({self._store.location!r})"

    def enable(self) -> None:
        self._store.read(enable_index)

    def has_due(self, *, force: bool = False) -> bool:
        return self._store.read(partial(has_due, force=force))

    def claim(self, *, limit: int, lease_ms: int = 60_000, force: bool = False) -> list[OutboxItem]:
        # The time is fixed once, so a replayed attempt claims the same items.
        return self._store.transact(
            partial(claim, now=now_ms(), limit=limit, lease_ms=lease_ms, force=force)
        )

    def done(self, items: Sequence[OutboxItem], textless: int = 0) -> None:
        self._store.transact(partial(execute, statements=done_statements(items, textless)))

    def failed(self, items: Sequence[OutboxItem], error: str) -> None:
        self._store.transact(partial(execute, statements=failed_statements(items, error)))

    def status(self) -> IndexStatus:
        return self._store.read(status)

    def counts(self) -> OutboxCounts:
        return self._store.read(counts)

    def pending_ids(self) -> set[str]:
        return self._store.read(pending_ids)

    def unqueued_complete(self) -> list[str]:
        return self._store.read(unqueued_complete)

    def enqueue_missing(self) -> int:
        return self._store.transact(enqueue_missing)

    def requeue(self, message_ids: Sequence[str], textless: int) -> None:
        self._store.transact(partial(requeue, message_ids=message_ids, textless=textless))

    def reindex_started(self) -> bool:
        return self._store.read(reindex_started)

    def start_reindex(self) -> None:
        self._store.transact(start_reindex)

    def finish_reindex(self) -> None:
        self._store.transact(finish_reindex)

    def wait(self, timeout: float) -> bool:
        woken = self._woken.wait(timeout)
        self._woken.clear()
        return woken

    def wake(self) -> None:
        if not self._woken.is_set():
            self._woken.set()
