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
from anchorline.results import IndexStatus

from .retry import RetryPolicy, write


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


def done(conn: apsw.Connection, policy: RetryPolicy, items: Sequence[Item]) -> None:
    """Remove finished items, unless they were re-queued while being worked on."""
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
        ],
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


def enqueue_all(conn: apsw.Connection) -> None:
    """Queue every complete message for (re)indexing; run inside a transaction."""
    conn.execute(
        """INSERT INTO index_outbox (message_id, action, enqueued_at)
           SELECT id, 'upsert', ? FROM messages WHERE status = 'complete'
           ON CONFLICT (message_id) DO UPDATE SET action = 'upsert', seq = seq + 1,
               attempts = 0, last_error = NULL, next_attempt_at = 0""",
        (now_ms(),),
    )
