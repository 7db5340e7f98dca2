"""One plain function per op, plus the reads.

Each takes an apsw connection and a validated op. Inside a transaction it
simply joins it; called on its own it runs in one ``BEGIN IMMEDIATE``
transaction. Checks that can refuse the op (``Conflict``, ``MessageNotFound``)
run before anything is written, so a refused op leaves no trace.

``message_id`` and ``now`` let the caller fix the minted id and timestamp, so
a retried write produces exactly the same row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import update_wrapper
from typing import Any, Concatenate, ParamSpec, TypeVar

import apsw
import attrs

from pipeline.errors import Conflict, MessageNotFound
from pipeline.ids import clock, new_message_id
from pipeline.ops import Add, Content, Delete, Reserve, Update, UpdateContent, encode_json
from pipeline.results import (
    Added,
    ContentUpdated,
    Deleted,
    Message,
    Reserved,
    Status,
    Updated,
)

P = ParamSpec("P")
R = TypeVar("R")

COLUMNS = (
    "id, conversation_id, role, content, metadata, status, client_message_id,"
    " created_at, updated_at"
)
_INSERT = (
    f"INSERT INTO messages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_TOUCH_CONVERSATION = """
    INSERT INTO conversations (id, created_at, updated_at, last_message_at) VALUES (?1, ?2, ?2, ?2)
    ON CONFLICT (id) DO UPDATE SET updated_at = ?2, last_message_at = ?2"""
_BUMP_CONVERSATION = "UPDATE conversations SET updated_at = ?2 WHERE id = ?1"


def atomic(
    fn: Callable[Concatenate[apsw.Connection, P], R],
) -> Callable[Concatenate[apsw.Connection, P], R]:
    """Run ``fn`` in its own transaction unless the connection is already in one."""

    def wrapper(conn: apsw.Connection, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if conn.in_transaction:
            return fn(conn, *args, **kwargs)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args, **kwargs)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    update_wrapper(wrapper, fn)
    return wrapper


def message_from_row(row: tuple[Any, ...]) -> Message:
    return Message(
        id=row[0],
        conversation_id=row[1],
        role=row[2],
        content=json.loads(row[3]),
        metadata=json.loads(row[4]),
        status=row[5],
        client_message_id=row[6],
        created_at=row[7],
        updated_at=row[8],
    )


def _by_client_id(conn: apsw.Connection, conversation_id: str, client_id: str) -> Message | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE conversation_id = ? AND client_message_id = ?",
        (conversation_id, client_id),
    ).fetchone()
    return None if row is None else message_from_row(row)


def check_replay(stored: Message, op: Add | Reserve) -> None:
    """Refuse a repeated ``client_message_id`` that names a different message."""
    if stored.role != op.role:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} is already used by a {stored.role}"
            f" message in conversation {op.conversation_id!r}"
        )
    if op.message_id is not None and op.message_id != stored.id:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} already names message {stored.id!r},"
            f" not {op.message_id!r}"
        )
    if isinstance(op, Add) and stored.status == "complete" and stored.content != op.content:
        raise Conflict(
            f"client_message_id: {op.client_message_id!r} already names a message"
            " with other content"
        )


def _insert(
    conn: apsw.Connection,
    op: Add | Reserve,
    content: Content,
    content_json: str,
    status: Status,
    message_id: str | None,
    now: int | None,
) -> Message | None:
    """Insert the message; ``None`` if an equivalent one is already stored."""
    mid = message_id or op.message_id or new_message_id()
    now = now or clock.now()
    conn.execute(
        _INSERT,
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
    )
    if conn.changes() == 0:
        if op.client_message_id is not None:
            stored = _by_client_id(conn, op.conversation_id, op.client_message_id)
            if stored is not None:
                check_replay(stored, op)
                return None
        raise Conflict(f"message_id: a message with id {mid!r} already exists")
    conn.execute(_TOUCH_CONVERSATION, (op.conversation_id, now))
    return Message(
        id=mid,
        conversation_id=op.conversation_id,
        role=op.role,
        content=content,
        metadata=op.metadata,
        status=status,
        client_message_id=op.client_message_id,
        created_at=now,
        updated_at=now,
    )


@atomic
def add_message(
    conn: apsw.Connection, op: Add, *, message_id: str | None = None, now: int | None = None
) -> Added:
    """Write a complete message; a repeated ``client_message_id`` returns the stored one."""
    message = _insert(conn, op, op.content, op.content_json, "complete", message_id, now)
    if message is None:
        assert op.client_message_id is not None
        stored = _by_client_id(conn, op.conversation_id, op.client_message_id)
        assert stored is not None
        return Added(message=stored, deduplicated=True)
    return Added(message=message)


@atomic
def reserve_message(
    conn: apsw.Connection, op: Reserve, *, message_id: str | None = None, now: int | None = None
) -> Reserved:
    """Write an empty placeholder (content ``[]``, status ``reserved``)."""
    message = _insert(conn, op, [], "[]", "reserved", message_id, now)
    if message is None:
        assert op.client_message_id is not None
        stored = _by_client_id(conn, op.conversation_id, op.client_message_id)
        assert stored is not None
        return Reserved(message=stored, deduplicated=True)
    return Reserved(message=message)


def _stored(conn: apsw.Connection, message_id: str) -> Message:
    message = get_message(conn, message_id)
    if message is None:
        raise MessageNotFound(message_id)
    return message


@atomic
def update_message_content(
    conn: apsw.Connection, op: UpdateContent, *, now: int | None = None
) -> ContentUpdated:
    """Replace the content; ``final`` marks the message complete, a partial keeps it reserved."""
    now = now or clock.now()
    status = "complete" if op.final else "reserved"
    row = conn.execute(
        f"""UPDATE messages SET content = ?, status = ?, updated_at = ?
            WHERE id = ? AND (? OR status = 'reserved') RETURNING {COLUMNS}""",
        (op.content_json, status, now, op.message_id, op.final),
    ).fetchone()
    if row is None:
        _stored(conn, op.message_id)
        raise Conflict(
            f"final: message {op.message_id!r} is already complete; a partial update"
            " (final=false) cannot reopen it"
        )
    conn.execute(_BUMP_CONVERSATION, (row[1], now))
    return ContentUpdated(message=message_from_row(row))


@atomic
def update_message_metadata(
    conn: apsw.Connection, op: Update, *, now: int | None = None
) -> Updated:
    """Shallow-merge ``op.metadata`` into the stored metadata."""
    stored = _stored(conn, op.message_id)
    now = now or clock.now()
    merged = {**stored.metadata, **op.metadata}
    conn.execute(
        "UPDATE messages SET metadata = ?, updated_at = ? WHERE id = ?",
        (encode_json(merged), now, op.message_id),
    )
    conn.execute(_BUMP_CONVERSATION, (stored.conversation_id, now))
    return Updated(message=attrs.evolve(stored, metadata=merged, updated_at=now))


@atomic
def delete_message(conn: apsw.Connection, op: Delete, *, now: int | None = None) -> Deleted:
    """Delete the message; an unknown id gives ``existed=False``."""
    row = conn.execute(
        "DELETE FROM messages WHERE id = ? RETURNING conversation_id", (op.message_id,)
    ).fetchone()
    if row is not None:
        conn.execute(_BUMP_CONVERSATION, (row[0], now or clock.now()))
    return Deleted(message_id=op.message_id, existed=row is not None)


# --- reads ------------------------------------------------------------------


def get_message(conn: apsw.Connection, message_id: str) -> Message | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else message_from_row(row)


def list_messages(
    conn: apsw.Connection, conversation_id: str, limit: int | None = None
) -> list[Message]:
    """The conversation's messages, oldest first; with ``limit``, only the newest ``limit``."""
    if limit is None:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY created_at, rowid",
            (conversation_id,),
        )
    else:
        rows = conn.execute(
            f"""SELECT {COLUMNS} FROM (
                    SELECT rowid AS r, * FROM messages WHERE conversation_id = ?
                    ORDER BY created_at DESC, rowid DESC LIMIT ?)
                ORDER BY created_at, r""",
            (conversation_id, limit),
        )
    return [message_from_row(row) for row in rows]


def list_conversations(conn: apsw.Connection, limit: int = 20) -> list[tuple[str, int, int]]:
    """``(id, message count, updated_at)`` of the most recently updated conversations."""
    return list(
        conn.execute(
            """SELECT c.id, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id),
                      c.updated_at
               FROM conversations c ORDER BY c.updated_at DESC LIMIT ?""",
            (limit,),
        )
    )
