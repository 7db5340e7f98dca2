"""The index outbox: intents to index, written by triggers with each message write.

A drainer claims a batch under a lease (so two drainers never work on the same
message at once), does the index work, and then deletes each item only if it
was not re-queued meanwhile (its ``seq`` is unchanged). A failed item keeps
its place with an attempt count, the error, and a time before which it is not
tried again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import cast

import apsw
import attrs

from anchorline.memory.retry import RetryPolicy
from anchorline.results import IndexStatus

from .transaction import write


@attrs.frozen
class Item:
    message_id: str
    action: str
    seq: int
    attempts: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def backoff_ms(attempts: int) -> int:
    """The wait before the next try of an item that failed ``attempts`` times: 0.5 s to 5 min."""
    ceiling = min(300_000, 500 * 2 ** min(attempts, 20))
    return int(random.uniform(ceiling / 2, ceiling))


Statements = Sequence[tuple[str, tuple[object, ...]]]


def transact(conn: apsw.Connection, policy: RetryPolicy, statements: Statements) -> None:
    def run(c: apsw.Connection) -> None:
        for sql, args in statements:
            c.execute(sql, args)

    write(conn, policy, run)


def claim(
    conn: apsw.Connection,
    policy: RetryPolicy,
    *,
    limit: int,
    lease_ms: int = 60_000,
    force: bool = False,
) -> list[Item]:
    """Lease up to ``limit`` due items, oldest first; ``force`` ignores their backoff."""
    now = now_ms()
    due = "" if force else "AND next_attempt_at <= ?1"

    def run(c: apsw.Connection) -> list[Item]:
        rows = c.execute(
            f"""UPDATE index_outbox SET lease_until = ?1 + ?2
                WHERE message_id IN (
                    SELECT message_id FROM index_outbox WHERE lease_until <= ?1 {due}
                    ORDER BY enqueued_at LIMIT ?3)
                RETURNING message_id, action, seq, attempts""",
            (now, lease_ms, limit),
        ).fetchall()
        return [Item(*cast(tuple[str, str, int, int], row)) for row in rows]

    return write(conn, policy, run)


def has_due(conn: apsw.Connection, force: bool = False) -> bool:
    """Whether any item is ready to be claimed (a read: no write lock taken)."""
    due = "" if force else "AND next_attempt_at <= ?1"
    row = conn.execute(
        f"SELECT 1 FROM index_outbox WHERE lease_until <= ?1 {due} LIMIT 1", (now_ms(),)
    ).fetchone()
    return row is not None


def done(
    conn: apsw.Connection, policy: RetryPolicy, items: Sequence[Item], textless: int = 0
) -> None:
    """Remove finished items, unless they were re-queued while being worked on.

    ``textless`` is added to the count of complete messages without text (see
    :func:`textless_count`), in the same transaction.
    """
    transact(
        conn,
        policy,
        [
            ("DELETE FROM index_outbox WHERE message_id = ? AND seq = ?", (i.message_id, i.seq))
            for i in items
        ]
        + [
            ("UPDATE index_outbox SET lease_until = 0 WHERE message_id = ?", (i.message_id,))
            for i in items
        ]
        + ([(_ADD_TEXTLESS, (textless,))] if textless else []),
    )


def failed(conn: apsw.Connection, policy: RetryPolicy, items: Sequence[Item], error: str) -> None:
    """Keep failed items, counting the attempt and scheduling the next one."""
    now = now_ms()
    transact(
        conn,
        policy,
        [
            (
                """UPDATE index_outbox SET attempts = attempts + 1, last_error = ?,
                       next_attempt_at = ?, lease_until = 0
                   WHERE message_id = ? AND seq = ?""",
                (error, now + backoff_ms(i.attempts + 1), i.message_id, i.seq),
            )
            for i in items
        ]
        + [
            ("UPDATE index_outbox SET lease_until = 0 WHERE message_id = ?", (i.message_id,))
            for i in items
        ],
    )


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
TEXTLESS_KEY = "index_textless"
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


@attrs.frozen
class Counts:
    """What the index should hold, counted cheaply (no scan of the messages' content)."""

    complete: int
    pending: int  # outbox items that will add or refresh a point
    textless: int


def counts(conn: apsw.Connection) -> Counts:
    # All messages minus the reserved ones: both counts are answered from indexes.
    row = conn.execute(
        """SELECT (SELECT count(*) FROM messages)
                  - (SELECT count(*) FROM messages WHERE status = 'reserved'),
                  (SELECT count(*) FROM index_outbox WHERE action != 'delete')"""
    ).fetchone()
    complete, pending = row if row else (0, 0)
    return Counts(complete=complete, pending=pending, textless=textless_count(conn))


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
