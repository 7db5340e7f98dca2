"""One plain function per op, plus the reads.

Each takes an apsw connection inside a transaction (``SQLiteTransaction``, or
``SQLiteStore.write`` for one of its own) and a validated op. Checks that can
refuse the op (``Conflict``, ``MessageNotFound``) run before anything is
written, so a refused op leaves the rest of the transaction as it was.

``message_id`` and ``now`` let the caller fix the minted id and timestamp, so
a retried write produces exactly the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw
import attrs

from anchorline.errors import AnchorlineError, Conflict, MessageNotFound
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory import queries, rows
from anchorline.memory.rows import (
    COLUMNS,
    READ_COLUMNS,
    after_conflict,
    check_expected,
    completed,
    decode_metadata,
    inserted,
    message_from_row,
)
from anchorline.ops import (
    COMPACTION_ROLE,
    Add,
    Compact,
    Content,
    Delete,
    Forget,
    Reserve,
    Update,
    UpdateContent,
    encode_json,
)
from anchorline.results import (
    Added,
    Compacted,
    ContentUpdated,
    Deleted,
    Forgotten,
    Message,
    Reserved,
    Status,
    Updated,
)

#: One statement: the seq comes from the conversation's row (the insert trigger
#: moves it on), so a batch can run this very INSERT with executemany.
INSERT = (
    f"INSERT INTO messages ({COLUMNS}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " coalesce((SELECT next_seq FROM conversations WHERE id = ?2), 1))"
    " ON CONFLICT DO NOTHING RETURNING seq"
)
# A copy keeps the seq it brings (the trigger moves the counter past it).
_RESTORE = (
    f"INSERT INTO messages ({COLUMNS}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " coalesce(nullif(?10, 0), (SELECT next_seq FROM conversations WHERE id = ?2), 1))"
    " ON CONFLICT DO NOTHING"
)
_PARENT = (
    "INSERT INTO conversations (id, parent_id, next_seq, message_count, first_at, last_at)"
    " VALUES (?, ?, 1, 0, ?, ?) ON CONFLICT DO NOTHING"
)


def _by_client_id(conn: apsw.Connection, conversation_id: str, client_id: str) -> Message | None:
    row = conn.execute(
        f"SELECT {READ_COLUMNS} FROM messages WHERE conversation_id = ? AND client_message_id = ?",
        (conversation_id, client_id),
    ).fetchone()
    return None if row is None else message_from_row(row)


def _insert(
    conn: apsw.Connection,
    op: Add | Reserve,
    content: Content,
    content_json: str,
    status: Status,
    message_id: str | None,
    now: int | None,
) -> tuple[Message, bool]:
    """Insert the message; return it, and whether it was already stored."""
    mid = message_id or op.message_id or new_message_id()
    now = now or clock.now()
    if op.parent_id is not None:  # recorded when the conversation is created
        conn.execute(_PARENT, (op.conversation_id, op.parent_id, now, now))
    row = conn.execute(
        INSERT,
        (
            mid,
            op.conversation_id,
            op.role,
            content_json,
            op.metadata_json,
            status,
            op.client_message_id,
            now,
            now,
        ),
    ).fetchone()
    if row is None:
        return after_conflict(
            op,
            mid,
            now,
            get_message(conn, mid),
            lambda: _by_client_id(conn, op.conversation_id, op.client_message_id or ""),
            lambda stored: _complete(conn, stored, op, now),  # type: ignore[arg-type]
        )
    return inserted(op, mid, content, status, now, row[0]), False


def _complete(conn: apsw.Connection, stored: Message, op: Add, now: int) -> Message:
    message = completed(stored, op.content, op.metadata, now)
    conn.execute(
        "UPDATE messages SET content = ?, metadata = ?, status = 'complete', updated_at = ?"
        " WHERE id = ?",
        (op.content_json, encode_json(message.metadata), message.updated_at, stored.id),
    )
    # The update trigger logged an update_content; in the feed, this write is the add.
    conn.execute("UPDATE changes SET kind = 'add' WHERE cursor = (SELECT max(cursor) FROM changes)")
    return message


def add_message(
    conn: apsw.Connection, op: Add, *, message_id: str | None = None, now: int | None = None
) -> Added:
    """Write a complete message.

    A repeated ``client_message_id`` (same conversation and role) returns the
    stored message with ``deduplicated=True`` and writes nothing, unless the
    stored one is still a ``reserved`` placeholder: then the add completes it,
    in place and under its id and ``created_at``, with the add's content, the
    placeholder's metadata updated by the add's (a shallow merge, the add's
    keys winning), status ``complete`` and a new ``updated_at``; the result has
    ``deduplicated=False``.
    """
    message, deduplicated = _insert(
        conn, op, op.content, op.content_json, "complete", message_id, now
    )
    return Added(message=message, deduplicated=deduplicated)


def add_messages(
    conn: apsw.Connection, ops: Sequence[Add], message_ids: Sequence[str], nows: Sequence[int]
) -> list[Added]:
    """Write complete messages, each with its fixed id and time, in the connection's
    open transaction: one ``executemany`` of :data:`INSERT`, then each op settled as
    :func:`add_message` settles it if any met a stored row.

    A refused op (``Conflict``) leaves none of them written; its error carries its
    position in ``op_index``.
    """
    conn.execute("SAVEPOINT add_messages")
    try:
        results = _add_messages(conn, ops, message_ids, nows)
    except AnchorlineError:
        conn.execute("ROLLBACK TO add_messages")
        conn.execute("RELEASE add_messages")
        raise
    conn.execute("RELEASE add_messages")
    return results


def _add_messages(
    conn: apsw.Connection, ops: Sequence[Add], message_ids: Sequence[str], nows: Sequence[int]
) -> list[Added]:
    for op, now in zip(ops, nows, strict=True):
        if op.parent_id is not None:  # recorded when the conversation is created
            conn.execute(_PARENT, (op.conversation_id, op.parent_id, now, now))
    # Every inserted row returns its seq, in order; a row that met a stored one
    # returns nothing.
    seqs = [
        row[0]
        for row in conn.executemany(
            INSERT,
            [
                (mid, op.conversation_id, op.role, op.content_json, op.metadata_json, "complete",
                 op.client_message_id, now, now)
                for op, mid, now in zip(ops, message_ids, nows, strict=True)
            ],
        )
    ]  # fmt: skip
    if len(seqs) == len(ops):
        return [
            Added(
                message=Message(
                    id=mid, conversation_id=op.conversation_id, role=op.role,
                    content=op.content, metadata=op.metadata, status="complete",
                    client_message_id=op.client_message_id, created_at=now, updated_at=now,
                    seq=seq,
                )
            )
            for op, mid, now, seq in zip(ops, message_ids, nows, seqs, strict=True)
        ]  # fmt: skip
    # Some met a stored row (a repeated client id, a taken id): settle each op in
    # order; a row this batch inserted reads back as the op's own write.
    results = []
    for i, (op, mid, now) in enumerate(zip(ops, message_ids, nows, strict=True)):
        try:
            message, deduplicated = _insert(
                conn, op, op.content, op.content_json, "complete", mid, now
            )
        except AnchorlineError as e:
            e.op_index = i
            raise
        results.append(Added(message=message, deduplicated=deduplicated))
    return results


def reserve_message(
    conn: apsw.Connection, op: Reserve, *, message_id: str | None = None, now: int | None = None
) -> Reserved:
    """Write an empty placeholder (content ``[]``, status ``reserved``)."""
    message, deduplicated = _insert(conn, op, [], "[]", "reserved", message_id, now)
    return Reserved(message=message, deduplicated=deduplicated)


def _stored(conn: apsw.Connection, message_id: str, expected: int | None = None) -> Message:
    message = get_message(conn, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    check_expected(message, expected)
    return message


def update_message_content(
    conn: apsw.Connection,
    op: UpdateContent,
    *,
    now: int | None = None,
    expect_updated_at: int | None = None,
) -> ContentUpdated:
    """Replace the content; ``final`` marks the message complete, a partial keeps it reserved."""
    now = now or wall_ms()
    status: Status = "complete" if op.final else "reserved"
    row = conn.execute(
        """UPDATE messages SET content = ?1, status = ?2, updated_at = max(?3, updated_at + 1)
            WHERE id = ?4 AND (?5 OR status = 'reserved') AND (?6 IS NULL OR updated_at = ?6)
            RETURNING conversation_id, role, metadata, client_message_id, created_at,
                      updated_at, seq""",
        (op.content_json, status, now, op.message_id, op.final, expect_updated_at),
    ).fetchone()
    if row is None:
        _stored(conn, op.message_id, expect_updated_at)
        raise Conflict(
            f"final: message {op.message_id!r} is already complete; a partial update"
            " (final=false) cannot reopen it"
        )
    # The content is the op's, as written: no need to read it back and decode it.
    return ContentUpdated(
        message=Message(
            id=op.message_id,
            conversation_id=row[0],
            role=row[1],
            content=op.content,
            metadata=decode_metadata(row[2]),
            status=status,
            client_message_id=row[3],
            created_at=row[4],
            updated_at=row[5],
            seq=row[6],
        )
    )


def update_message_metadata(
    conn: apsw.Connection,
    op: Update,
    *,
    now: int | None = None,
    expect_updated_at: int | None = None,
) -> Updated:
    """Shallow-merge ``op.metadata`` into the stored metadata."""
    stored = _stored(conn, op.message_id, expect_updated_at)
    now = max(now or wall_ms(), stored.updated_at + 1)
    merged = {**stored.metadata, **op.metadata}
    conn.execute(
        "UPDATE messages SET metadata = ?, updated_at = ? WHERE id = ?",
        (encode_json(merged), now, op.message_id),
    )
    return Updated(message=attrs.evolve(stored, metadata=merged, updated_at=now))


def delete_message(
    conn: apsw.Connection, op: Delete, *, expect_updated_at: int | None = None
) -> Deleted:
    """Delete the message; an unknown id gives ``existed=False``."""
    if expect_updated_at is not None:
        stored = get_message(conn, op.message_id)
        if stored is not None:
            check_expected(stored, expect_updated_at)
    conn.execute("DELETE FROM messages WHERE id = ?", (op.message_id,))
    return Deleted(message_id=op.message_id, existed=conn.changes() > 0)


def restore_message(conn: apsw.Connection, message: Message) -> Added | None:
    """Write ``message`` exactly as given unless its id is stored with an ``updated_at``
    at or after the message's: an ``Added`` for it, or ``None`` if the stored row was
    as new. Another message holding its ``client_message_id`` is a :class:`Conflict`."""
    if message.client_message_id is not None:
        holder = _by_client_id(conn, message.conversation_id, message.client_message_id)
        if holder is not None and holder.id != message.id:
            raise Conflict(
                f"client_message_id: {message.client_message_id!r} already names message"
                f" {holder.id!r} in conversation {message.conversation_id!r},"
                f" not {message.id!r}"
            )
    row = (
        message.id,
        message.conversation_id,
        message.role,
        encode_json(message.content),
        encode_json(message.metadata) if message.metadata else "{}",
        message.status,
        message.client_message_id,
        message.created_at,
        message.updated_at,
        message.seq,
    )
    conn.execute(_RESTORE, row)
    if not conn.changes():  # the id is stored: an older copy is brought up to date
        conn.execute(
            """UPDATE messages SET conversation_id = ?2, role = ?3, content = ?4, metadata = ?5,
                   status = ?6, client_message_id = ?7, created_at = ?8, updated_at = ?9
               WHERE id = ?1 AND updated_at < ?9""",
            row[:9],
        )
    return Added(message=message, deduplicated=False) if conn.changes() else None


def landed(conn: apsw.Connection, results: list[Any]) -> bool:
    """Whether the writes that gave ``results`` are in the database (after a failed COMMIT)."""
    return rows.landed(results, lambda message_id: get_message(conn, message_id))


# --- reads ------------------------------------------------------------------


def get_message(conn: apsw.Connection, message_id: str) -> Message | None:
    row = conn.execute(
        f"SELECT {READ_COLUMNS} FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    return None if row is None else message_from_row(row)


#: The SQLite store's SQL, for the queries both stores share (``memory.queries``).
DIALECT = queries.Dialect(mark="?", messages="messages")


def list_messages(
    conn: apsw.Connection,
    conversation_id: str,
    limit: int | None = None,
    after_seq: int | None = None,
    roles: Sequence[str] | None = None,
) -> list[Message]:
    """The conversation's messages in seq order (see ``queries.messages``)."""
    sql, params = queries.messages(DIALECT, conversation_id, limit, after_seq, roles)
    return [message_from_row(row) for row in conn.execute(sql, params)]


def list_reserved(conn: apsw.Connection, updated_before: int, limit: int) -> list[Message]:
    """Messages still ``reserved`` and last written before ``updated_before``, oldest first."""
    sql, params = queries.reserved(DIALECT, updated_before, limit)
    return [message_from_row(row) for row in conn.execute(sql, params)]


def list_complete(conn: apsw.Connection, after_id: str | None, limit: int) -> list[Message]:
    """Up to ``limit`` complete messages whose id sorts after ``after_id``, in id order."""
    sql, params = queries.page(DIALECT, after_id, limit, complete_only=True)
    return [message_from_row(row) for row in conn.execute(sql, params)]


def scan(conn: apsw.Connection, after_id: str | None, limit: int) -> list[Message]:
    """Up to ``limit`` messages whose id sorts after ``after_id``, in id order."""
    sql, params = queries.page(DIALECT, after_id, limit)
    return [message_from_row(row) for row in conn.execute(sql, params)]


# --- forgetting a conversation ---------------------------------------------


def forget_conversation(conn: apsw.Connection, op: Forget) -> Forgotten:
    """Delete every message of the conversation; the index triggers queue their points'
    deletion. With ``secure_delete`` on (the store's connection sets it), the freed
    space is overwritten with zeros."""
    conn.execute("DELETE FROM messages WHERE conversation_id = ?", (op.conversation_id,))
    return Forgotten(conversation_id=op.conversation_id, deleted=conn.changes())


# --- compaction -----------------------------------------------------------


def compact_conversation(
    conn: apsw.Connection, op: Compact, *, message_id: str, now: int
) -> Compacted:
    """Write the compaction row, with the conversation's next seq."""
    row = conn.execute(
        INSERT,
        (
            message_id,
            op.conversation_id,
            COMPACTION_ROLE,
            op.content_json,
            op.metadata_json,
            "complete",
            None,
            now,
            now,
        ),
    ).fetchone()
    if row is None:
        raise Conflict(f"message_id: a message with id {message_id!r} already exists")
    return Compacted(message=rows.compaction_message(op, message_id, now, row[0]))
