"""The index outbox in PostgreSQL: the ``Outbox`` protocol, as the SQLite store keeps it.

Items are written by triggers (``schema.INDEX_TRIGGERS``) in the transaction of
the message write. A drainer claims a batch in one statement, ``UPDATE ...
WHERE message_id IN (SELECT ... FOR UPDATE SKIP LOCKED)``, so drainers on any
number of machines never take the same item, nor wait for each other. Leases
and backoffs are measured on the server's clock, the one clock every machine
shares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import psycopg

from anchorline.memory.interface import TEXTLESS_KEY, OutboxCounts, OutboxItem, backoff_ms
from anchorline.results import IndexStatus

from .crud import MESSAGES, Executes
from .notify import Listener, Notifier
from .schema import INDEX_TRIGGERS, LOCK, SCHEMA

T = TypeVar("T")

OUTBOX = f"{SCHEMA}.index_outbox"
META = f"{SCHEMA}.anchorline_meta"
#: Milliseconds since the epoch on the server's clock.
NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


class Store(Protocol):
    """What the outbox needs of its store."""

    indexing: bool

    def queued(self) -> None: ...

    def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T: ...

    def write(self, fn: Callable[[Executes], T], *, queues: bool = False) -> T: ...


def _set_textless(db: Executes, count: int) -> None:
    db.execute(
        f"INSERT INTO {META} VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (TEXTLESS_KEY, str(max(0, count))),
    )


def _enqueue_complete(db: Executes, *, refresh: bool, at: str = NOW_MS) -> int:
    """Queue every complete message, stamped with the SQL expression ``at``; ``refresh``
    also re-queues those already waiting."""
    conflict = (
        "DO UPDATE SET action = 'upsert', seq = o.seq + 1, attempts = 0, last_error = NULL,"
        " next_attempt_at = 0"
        if refresh
        else "DO NOTHING"
    )
    cursor = db.execute(
        f"""INSERT INTO {OUTBOX} AS o (message_id, action, enqueued_at)
            SELECT id, 'upsert', {at} FROM {MESSAGES} WHERE status = 'complete'
            ON CONFLICT (message_id) {conflict}"""
    )
    return cursor.rowcount


class PostgresOutbox:
    """The durable queue of intents to index (the ``Outbox`` protocol) in PostgreSQL."""

    def __init__(self, store: Store, listener: Listener, notifier: Notifier) -> None:
        self._store = store
        self._listener = listener
        self._notifier = notifier
        self._woken = threading.Event()

    def enable(self) -> None:
        """Start recording intents (once per database), queueing every complete message."""
        if self._store.indexing:
            return

        def run(db: Executes) -> None:
            db.execute(LOCK)
            enabled = db.execute(
                f"INSERT INTO {META} VALUES ('index_enabled', '1') ON CONFLICT DO NOTHING"
            )
            if enabled.rowcount:
                db.execute(INDEX_TRIGGERS)
                _enqueue_complete(db, refresh=False, at="updated_at")

        self._store.write(run)
        self._store.indexing = True
        self._store.queued()  # what was there is queued now

    def has_due(self, *, force: bool = False) -> bool:
        """Whether an item could be claimed now; ``force`` ignores backoff."""
        due = "" if force else " AND next_attempt_at <= now.ms"
        query = f"""WITH now AS (SELECT {NOW_MS} AS ms)
            SELECT EXISTS (SELECT 1 FROM {OUTBOX}, now WHERE lease_until <= now.ms{due})"""
        return bool(self._store.read(lambda c: c.execute(query).fetchone()[0]))  # type: ignore[index]

    def claim(self, *, limit: int, lease_ms: int = 60_000, force: bool = False) -> list[OutboxItem]:
        """Lease up to ``limit`` due items, oldest first; ``force`` ignores backoff.

        One statement on its own: its row locks last only while it runs, and the
        lease keeps other drainers off the items afterwards. (A claim whose answer is
        lost with its connection is made again; what it had leased waits for its
        lease to run out.)
        """
        due = "" if force else " AND q.next_attempt_at <= now.ms"
        query = f"""WITH now AS (SELECT {NOW_MS} AS ms)
            UPDATE {OUTBOX} SET lease_until = (SELECT ms FROM now) + %s
            WHERE message_id IN (
                SELECT q.message_id FROM {OUTBOX} AS q, now WHERE q.lease_until <= now.ms{due}
                ORDER BY q.enqueued_at, q.message_id LIMIT %s FOR UPDATE OF q SKIP LOCKED)
            RETURNING message_id, action, seq, attempts, enqueued_at"""
        rows = self._store.read(lambda c: c.execute(query, (lease_ms, limit)).fetchall())
        rows.sort(key=lambda row: (row[4], row[0]))
        return [OutboxItem(row[0], row[1], row[2], row[3]) for row in rows]

    def done(self, items: Sequence[OutboxItem], textless: int = 0) -> None:
        """Remove finished items (unless re-queued meanwhile); add ``textless`` to the
        count of complete messages that have no text to index."""
        ids = [i.message_id for i in items]
        seqs = [i.seq for i in items]

        def run(db: Executes) -> None:
            if ids:
                db.execute(
                    f"""DELETE FROM {OUTBOX} o USING unnest(%s::text[], %s::bigint[]) AS d(id, seq)
                        WHERE o.message_id = d.id AND o.seq = d.seq""",
                    (ids, seqs),
                )
                db.execute(
                    f"UPDATE {OUTBOX} SET lease_until = 0 WHERE message_id = ANY(%s)", (ids,)
                )
            if textless:
                db.execute(
                    f"""INSERT INTO {META} AS m VALUES (%(key)s, GREATEST(0, %(n)s)::text)
                        ON CONFLICT (key) DO UPDATE
                        SET value = GREATEST(0, m.value::bigint + %(n)s)::text""",
                    {"key": TEXTLESS_KEY, "n": textless},
                )

        if ids or textless:
            self._store.write(run)

    def failed(self, items: Sequence[OutboxItem], error: str) -> None:
        """Keep failed items with the error, an attempt more, and a backoff."""
        if not items:
            return
        ids = [i.message_id for i in items]
        seqs = [i.seq for i in items]
        waits = [backoff_ms(i.attempts + 1) for i in items]

        def run(db: Executes) -> None:
            db.execute(
                f"""UPDATE {OUTBOX} o SET attempts = o.attempts + 1, last_error = %s,
                        next_attempt_at = {NOW_MS} + f.wait, lease_until = 0
                    FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS f(id, seq, wait)
                    WHERE o.message_id = f.id AND o.seq = f.seq""",
                (error, ids, seqs, waits),
            )
            db.execute(f"UPDATE {OUTBOX} SET lease_until = 0 WHERE message_id = ANY(%s)", (ids,))

        self._store.write(run)

    def status(self) -> IndexStatus:
        """How many items wait, how many are failing, the oldest, the last error."""
        query = f"""SELECT c.pending, c.failing, oldest.message_id, oldest.enqueued_at,
                           err.last_error
            FROM (SELECT count(*) AS pending, count(*) FILTER (WHERE attempts > 0) AS failing
                  FROM {OUTBOX}) AS c
            LEFT JOIN LATERAL (SELECT message_id, enqueued_at FROM {OUTBOX}
                               ORDER BY enqueued_at, message_id LIMIT 1) AS oldest ON true
            LEFT JOIN LATERAL (SELECT last_error FROM {OUTBOX} WHERE last_error IS NOT NULL
                               ORDER BY next_attempt_at DESC LIMIT 1) AS err ON true"""
        row = self._store.read(lambda c: c.execute(query).fetchone())
        assert row is not None
        return IndexStatus(
            pending=row[0],
            failing=row[1],
            oldest_message_id=row[2],
            oldest_enqueued_at=row[3],
            last_error=row[4],
        )

    def counts(self) -> OutboxCounts:
        """The figures the index is checked against when it opens."""
        # All messages minus the reserved ones: both counts are answered from indexes.
        query = f"""SELECT (SELECT count(*) FROM {MESSAGES})
                           - (SELECT count(*) FROM {MESSAGES} WHERE status = 'reserved'),
                           (SELECT count(*) FROM {OUTBOX} WHERE action <> 'delete'),
                           (SELECT value FROM {META} WHERE key = %s)"""
        row = self._store.read(lambda c: c.execute(query, (TEXTLESS_KEY,)).fetchone())
        assert row is not None
        return OutboxCounts(
            complete=row[0], pending=row[1], textless=int(row[2]) if row[2] is not None else 0
        )

    def pending_ids(self) -> set[str]:
        """The ids of every message with an item waiting."""
        rows = self._store.read(lambda c: c.execute(f"SELECT message_id FROM {OUTBOX}").fetchall())
        return {row[0] for row in rows}

    def unqueued_complete(self) -> list[str]:
        """The ids of complete messages with no item waiting."""
        query = f"""SELECT id FROM {MESSAGES} m WHERE status = 'complete'
                    AND NOT EXISTS (SELECT 1 FROM {OUTBOX} o WHERE o.message_id = m.id)"""
        return [row[0] for row in self._store.read(lambda c: c.execute(query).fetchall())]

    def enqueue_missing(self) -> int:
        """Queue every complete message that has no item waiting; returns how many."""

        def run(db: Executes) -> int:
            queued = _enqueue_complete(db, refresh=False)
            _set_textless(db, 0)  # counted again as the queued messages are indexed
            return queued

        return self._store.write(run, queues=True)

    def requeue(self, message_ids: Sequence[str], textless: int) -> None:
        """Queue ``message_ids`` for an upsert and set the count of textless messages."""
        ids = list(message_ids)

        def run(db: Executes) -> None:
            if ids:
                db.execute(
                    f"""INSERT INTO {OUTBOX} (message_id, action, enqueued_at)
                        SELECT id, 'upsert', {NOW_MS} FROM unnest(%s::text[]) AS q(id)
                        ON CONFLICT (message_id) DO NOTHING""",
                    (ids,),
                )
            _set_textless(db, textless)

        self._store.write(run, queues=bool(ids))

    def reindex_started(self) -> bool:
        """Whether a reindex was started and not finished (it resumes)."""
        query = f"SELECT EXISTS (SELECT 1 FROM {META} WHERE key = 'reindex')"
        return bool(self._store.read(lambda c: c.execute(query).fetchone()[0]))  # type: ignore[index]

    def start_reindex(self) -> None:
        """Queue every complete message and record that a reindex runs, in one transaction."""

        def run(db: Executes) -> None:
            _enqueue_complete(db, refresh=True)
            _set_textless(db, 0)
            db.execute(
                f"INSERT INTO {META} VALUES ('reindex', 'started') ON CONFLICT (key) DO NOTHING"
            )

        self._store.write(run, queues=True)

    def finish_reindex(self) -> None:
        """Record that the reindex is done."""
        self._store.write(lambda db: db.execute(f"DELETE FROM {META} WHERE key = 'reindex'"))

    def wait(self, timeout: float) -> bool:
        """Block until another writer may have queued work, or ``timeout`` seconds pass;
        True when woken early (by a NOTIFY on ``anchorline_outbox``, or :meth:`wake`)."""
        if self._woken.is_set():
            self._woken.clear()
            return True
        woken = self._listener.wait(timeout)
        if self._woken.is_set():
            self._woken.clear()
            return True
        return woken

    def wake(self) -> None:
        """Make a :meth:`wait` under way (or the next) return soon: a flag for the next
        one, and a notification (coalesced with the commits') for one under way."""
        if not self._woken.is_set():
            self._woken.set()
            self._notifier.poke()
