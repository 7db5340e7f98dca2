"""One function per op, and the reads, in PostgreSQL.

They behave exactly as the SQLite store's (``anchorline.memory.sqlite.crud``), whose
checks and row mapping they share: the same refusals with the same messages,
made before anything is written. Connections run READ COMMITTED, so the
read-then-write ops lock the row they read (``FOR UPDATE``) where SQLite's
single writer needed nothing. Each op is one round trip in the usual case:
``INSERT ... ON CONFLICT DO NOTHING`` looks further only when it wrote nothing,
``UPDATE ... RETURNING`` and ``DELETE ... RETURNING`` check their guard in the
statement and look further only when it did not match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import psycopg
from psycopg import ClientCursor

from anchorline.errors import AnchorlineError, Conflict, InvalidOp, MessageNotFound
from anchorline.ids import wall_ms
from anchorline.memory import queries, rows
from anchorline.memory.rows import (
    after_conflict,
    check_expected,
    completed,
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

from .connection import PooledConnection
from .schema import SCHEMA

MESSAGES = f"{SCHEMA}.messages"
CONVERSATIONS = f"{SCHEMA}.conversations"
COLUMNS = (
    "id, conversation_id, role, content, metadata, status, client_message_id,"
    " created_at, updated_at"
)
#: What a read selects: :data:`COLUMNS` and ``seq`` (``rows.message_from_row``'s order).
READ_COLUMNS = COLUMNS + ", seq"
# One statement: insert_message (schema.py) takes the seq from the conversation's
# row, which stays locked until the transaction ends, and inserts the row.
# Its values, in order: id, conversation, parent, role, content, metadata, status,
# client id, time, sole (the last, see Session.write_sole).
_INSERT = f"SELECT {SCHEMA}.insert_message(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
# A batch takes each conversation's seqs at once: one upsert moves the row on by the
# batch's count (in id order, so two batches lock rows in the same order), then each
# row's INSERT counts back from it (the transaction sees its own update).
_TAKE_SEQS = f"""INSERT INTO {CONVERSATIONS} AS c
    (id, parent_id, next_seq, message_count, first_at, last_at)
SELECT t.id, t.parent, t.n + 1, t.n, t.first_at, t.last_at
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])
     AS t(id, parent, n, first_at, last_at)
ON CONFLICT (id) DO UPDATE SET next_seq = c.next_seq + excluded.message_count,
    message_count = c.message_count + excluded.message_count,
    last_at = GREATEST(c.last_at, excluded.last_at)"""
# Its values: id, conversation, role, content, metadata, client id, time, time,
# conversation, how far back from the conversation's next seq.
_INSERT_TAKEN = f"""INSERT INTO {MESSAGES} ({COLUMNS}, seq)
VALUES (%s, %s, %s, %s, %s, 'complete', %s, %s, %s,
        (SELECT next_seq FROM {CONVERSATIONS} WHERE id = %s) - %s)
ON CONFLICT DO NOTHING RETURNING seq"""
#: The PostgreSQL store's SQL, for the queries both stores share (``memory.queries``).
DIALECT = queries.Dialect(mark="%s", messages=MESSAGES, arrays=True)
_SELECT = DIALECT.select


class Executes(Protocol):
    """A connection, or a :class:`Session` of a write transaction."""

    def execute(self, query: str, params: Any = None, /) -> psycopg.Cursor[Any]: ...


class Session:
    """A pooled connection inside one attempt at a write transaction.

    The transaction is begun by its first statement: ``BEGIN`` travels in the
    same message (a simple-protocol query, its values bound by psycopg on the
    client), so a one-op transaction costs two round trips (that statement and
    ``COMMIT``), not three. Later statements go the usual way, prepared once
    psycopg has seen them a few times.

    A session made ``sole`` (the transaction will hold one write, committed
    right after it) sends an add, a reserve or a content update as a statement
    that is its own transaction: the write, its change feed row and the commit in
    one round trip (:meth:`write_sole`). Anything else, or such a write that would
    not go through as it is, goes the usual way.
    """

    __slots__ = ("begun", "changes", "committed", "conn", "sent_sole", "sole")

    def __init__(self, conn: psycopg.Connection[Any], *, sole: bool = False) -> None:
        self.conn = conn
        self.begun = False
        self.sole = sole
        #: Whether a write was committed by :meth:`write_sole` (nothing is left to commit).
        self.committed = False
        #: Whether :meth:`write_sole` sent a write whose answer did not come back: it may
        #: have committed.
        self.sent_sole = False
        #: The change feed rows of this attempt's writes, written at its commit.
        self.changes: list[tuple[str, bool, str, str, int, int]] = []

    def execute(self, query: str, params: Any = None, /) -> psycopg.Cursor[Any]:
        if self.begun:
            return self.conn.execute(query, params)
        self.begun = True
        cursor = ClientCursor(self.conn)
        cursor.execute("BEGIN; " + query, params)
        cursor.nextset()
        return cursor

    def write_sole(self, query: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Run the write ``query``, whose last value says it is sole, as its own
        transaction if this session is sole and has not begun: its row, or ``None``
        when it wrote nothing (the write is then for the usual way) or could not be
        sent so."""
        if not self.sole or self.begun:
            return None
        self.sole = False
        self.sent_sole = True
        conn = self.conn
        cursor = getattr(conn, "write_cursor", None)
        if cursor is None:
            cursor = conn.cursor()
            if isinstance(conn, PooledConnection):
                conn.write_cursor = cursor
        try:
            row = cursor.execute(query, (*params[:-1], True)).fetchone()
        except psycopg.Error as e:
            if e.sqlstate != MET_STORED:
                raise
            row = None
        self.sent_sole = False
        if row is None or row[0] is None:
            return None
        self.committed = True
        return tuple(row)


#: What ``insert_message`` alone raises when the row meets a stored one (schema.py).
MET_STORED = "AL001"


def _log(
    db: Executes, kind: str, final: bool, message_id: str, conversation_id: str, seq: int, at: int
) -> None:
    """Note a write for the change feed (a :class:`Session`'s; a bare connection keeps none)."""
    changes = getattr(db, "changes", None)
    if changes is not None:
        changes.append((kind, final, message_id, conversation_id, seq, at))


def check_storable(op: Add | Reserve | Message, message_id: str) -> None:
    """Refuse ids PostgreSQL cannot store: ``text`` holds no NUL character.

    (Content and metadata are JSON, where a NUL is the escape ``\\u0000``.)
    """
    fields = (
        ("message_id", message_id),
        ("conversation_id", op.conversation_id),
        ("client_message_id", op.client_message_id or ""),
    )
    for field, value in fields:
        if "\x00" in value:
            raise InvalidOp(
                f"{field}: contains a NUL character (\\x00), which PostgreSQL cannot store"
            )


def get_message(db: Executes, message_id: str, *, lock: bool = False) -> Message | None:
    """The stored message, or ``None``; ``lock`` holds its row until the transaction ends."""
    if "\x00" in message_id:
        return None  # cannot be stored (see check_storable), so is not
    row = db.execute(
        f"{_SELECT} WHERE id = %s FOR UPDATE" if lock else f"{_SELECT} WHERE id = %s",
        (message_id,),
    ).fetchone()
    return None if row is None else message_from_row(row)


def _by_client_id(db: Executes, conversation_id: str, client_id: str) -> Message | None:
    row = db.execute(
        f"{_SELECT} WHERE conversation_id = %s AND client_message_id = %s FOR UPDATE",
        (conversation_id, client_id),
    ).fetchone()
    return None if row is None else message_from_row(row)


def _insert(
    db: Executes,
    op: Add | Reserve,
    content: Content,
    content_json: str,
    status: Status,
    message_id: str,
    now: int,
) -> tuple[Message, bool]:
    """Insert the message; return it, and whether it was already stored."""
    check_storable(op, message_id)
    params = (
        message_id, op.conversation_id, op.parent_id, op.role, content_json, op.metadata_json,
        status, op.client_message_id, now, False,
    )  # fmt: skip
    if type(db) is Session and db.sole:
        row = db.write_sole(_INSERT, params)
        if row is not None:  # written, in the feed and committed
            return inserted(op, message_id, content, status, now, row[0]), False
    row = db.execute(_INSERT, params).fetchone()
    if row is None or row[0] is None:  # met a stored row; its seq was given back
        return after_conflict(
            op,
            message_id,
            now,
            get_message(db, message_id, lock=True),
            lambda: _by_client_id(db, op.conversation_id, op.client_message_id or ""),
            lambda stored: _complete(db, stored, op, now),  # type: ignore[arg-type]
        )
    complete = status == "complete"
    _log(
        db, "add" if complete else "reserve", complete, message_id, op.conversation_id, row[0], now
    )
    return inserted(op, message_id, content, status, now, row[0]), False


def _complete(db: Executes, stored: Message, op: Add, now: int) -> Message:
    message = completed(stored, op.content, op.metadata, now)
    db.execute(
        f"UPDATE {MESSAGES} SET content = %s, metadata = %s, status = 'complete',"
        " updated_at = %s WHERE id = %s",
        (op.content_json, encode_json(message.metadata), message.updated_at, stored.id),
    )
    _log(db, "add", True, stored.id, stored.conversation_id, stored.seq, message.updated_at)
    return message


def add_message(db: Executes, op: Add, *, message_id: str, now: int) -> Added:
    """Write a complete message (see ``anchorline.memory.sqlite.crud.add_message``)."""
    message, deduplicated = _insert(
        db, op, op.content, op.content_json, "complete", message_id, now
    )
    return Added(message=message, deduplicated=deduplicated)


def add_messages(
    db: Executes, ops: Sequence[Add], message_ids: Sequence[str], nows: Sequence[int]
) -> list[Added]:
    """Write complete messages, each with its fixed id and time (see
    ``anchorline.memory.sqlite.crud.add_messages``): each conversation's seqs taken by
    one upsert, then one ``executemany`` of the rows, all sent in one pipeline; when
    any row met a stored one, the batch is undone and each op settled as
    :func:`add_message` settles it.

    A refused op (``Conflict``) leaves none of them written; its error carries its
    position in ``op_index``.
    """
    if not isinstance(db, Session):  # a bare connection: no transaction to batch in
        return [
            add_message(db, op, message_id=mid, now=now)
            for op, mid, now in zip(ops, message_ids, nows, strict=True)
        ]
    for i, (op, mid) in enumerate(zip(ops, message_ids, strict=True)):
        try:
            check_storable(op, mid)
        except AnchorlineError as e:
            e.op_index = i
            raise
    # Per conversation: [parent, count, first now, last now], as take_seq would leave it.
    taken: dict[str, list[Any]] = {}
    for op, now in zip(ops, nows, strict=True):
        row = taken.get(op.conversation_id)
        if row is None:
            taken[op.conversation_id] = [op.parent_id, 1, now, now]
        else:
            row[1] += 1
            row[3] = max(row[3], now)
    left = {c: row[1] for c, row in taken.items()}
    params = []
    for op, mid, now in zip(ops, message_ids, nows, strict=True):
        left[op.conversation_id] -= 1
        conversation = op.conversation_id
        params.append(
            (mid, conversation, op.role, op.content_json, op.metadata_json,
             op.client_message_id, now, now, conversation, left[conversation] + 1)
        )  # fmt: skip
    ids = sorted(taken)
    take = [ids, *([taken[c][k] for c in ids] for k in range(4))]
    conn = db.conn
    cursor = conn.cursor()
    with conn.pipeline():
        if not db.begun:
            db.begun = True
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT add_messages")
        conn.execute(_TAKE_SEQS, take)
        cursor.executemany(_INSERT_TAKEN, params, returning=True)
    seqs: list[int] = []
    while True:  # one result per row: its seq, or nothing when it met a stored row
        row = cursor.fetchone()
        if row is not None:
            seqs.append(row[0])
        if not cursor.nextset():
            break
    if len(seqs) == len(ops):
        conn.execute("RELEASE add_messages")
        db.changes += [
            ("add", True, mid, op.conversation_id, seq, now)
            for op, mid, now, seq in zip(ops, message_ids, nows, seqs, strict=True)
        ]
        return [
            Added(message=inserted(op, mid, op.content, "complete", now, seq))
            for op, mid, now, seq in zip(ops, message_ids, nows, seqs, strict=True)
        ]
    # Some met a stored row (a repeated client id, a taken id): undo the batch (its
    # seqs were never seen) and settle each op in order, as a lone add would.
    conn.execute("ROLLBACK TO add_messages")
    logged = len(db.changes)
    results = []
    try:
        for i, (op, mid, now) in enumerate(zip(ops, message_ids, nows, strict=True)):
            try:
                results.append(add_message(db, op, message_id=mid, now=now))
            except AnchorlineError as e:
                e.op_index = i
                raise
    except AnchorlineError:
        conn.execute("ROLLBACK TO add_messages")
        conn.execute("RELEASE add_messages")
        del db.changes[logged:]
        raise
    conn.execute("RELEASE add_messages")
    return results


def reserve_message(db: Executes, op: Reserve, *, message_id: str, now: int) -> Reserved:
    """Write an empty placeholder (content ``[]``, status ``reserved``)."""
    message, deduplicated = _insert(db, op, [], "[]", "reserved", message_id, now)
    return Reserved(message=message, deduplicated=deduplicated)


def _stored(db: Executes, message_id: str, expected: int | None, *, lock: bool) -> Message:
    message = get_message(db, message_id, lock=lock)
    if message is None:
        raise MessageNotFound(message_id)
    check_expected(message, expected)
    return message


# Its values: id, content, final, time, expected updated_at, sole.
_UPDATE_CONTENT = f"SELECT * FROM {SCHEMA}.update_content(%s, %s, %s, %s, %s::bigint, %s)"


def update_message_content(
    db: Executes, op: UpdateContent, *, now: int, expected: int | None
) -> ContentUpdated:
    """Replace the content; ``final`` marks the message complete, a partial keeps it reserved."""
    status: Status = "complete" if op.final else "reserved"
    if "\x00" in op.message_id:
        raise MessageNotFound(op.message_id)
    params = (op.message_id, op.content_json, op.final, now, expected, False)
    # A guarded update takes the usual way: after a lost answer, only the transaction's
    # own replay can tell a write that landed from a guard that no longer holds.
    row = None
    if type(db) is Session and db.sole and expected is None:
        row = db.write_sole(_UPDATE_CONTENT, params)
    if row is None:
        row = db.execute(_UPDATE_CONTENT, params).fetchone()
        if row is None:
            _stored(db, op.message_id, expected, lock=False)
            raise Conflict(
                f"final: message {op.message_id!r} is already complete; a partial update"
                " (final=false) cannot reopen it"
            )
        _log(db, "update_content", op.final, op.message_id, row[0], row[6], row[5])
    return ContentUpdated(
        message=Message(
            id=op.message_id,
            conversation_id=row[0],
            role=row[1],
            content=op.content,  # as written: no need to read it back and decode it
            metadata=rows.decode_metadata(row[2]),
            status=status,
            client_message_id=row[3],
            created_at=row[4],
            updated_at=row[5],
            seq=row[6],
        )
    )


def content_landed(db: Executes, op: UpdateContent, now: int) -> ContentUpdated | None:
    """Whether the stored message reads as ``op`` written at ``now`` leaves it (after a
    content update sent as its own transaction whose answer was lost): its result if
    so. Only an update without a guard is sent so (see update_message_content), so a
    match means the message is as the caller asked, whoever wrote it last."""
    stored = get_message(db, op.message_id)
    status = "complete" if op.final else "reserved"
    if (
        stored is None
        or stored.status != status
        or stored.updated_at < now
        or stored.content != op.content
    ):
        return None
    return ContentUpdated(message=stored)


def update_message_metadata(db: Executes, op: Update, *, now: int, expected: int | None) -> Updated:
    """Shallow-merge ``op.metadata`` into the stored metadata (the row locked meanwhile)."""
    stored = _stored(db, op.message_id, expected, lock=True)
    now = max(now, stored.updated_at + 1)
    merged = {**stored.metadata, **op.metadata}
    db.execute(
        f"UPDATE {MESSAGES} SET metadata = %s, updated_at = %s WHERE id = %s",
        (encode_json(merged), now, op.message_id),
    )
    complete = stored.status == "complete"
    _log(db, "update", complete, op.message_id, stored.conversation_id, stored.seq, now)
    return Updated(message=attrs.evolve(stored, metadata=merged, updated_at=now))


_DELETE = f"""WITH d AS (
    DELETE FROM {MESSAGES} WHERE id = %(id)s
        AND (%(expected)s::bigint IS NULL OR updated_at = %(expected)s::bigint)
    RETURNING conversation_id, seq),
u AS (UPDATE {CONVERSATIONS} AS c SET message_count = c.message_count - 1
      FROM d WHERE c.id = d.conversation_id)
SELECT conversation_id, seq FROM d"""


def delete_message(db: Executes, op: Delete, *, expected: int | None) -> Deleted:
    """Delete the message; an unknown id gives ``existed=False``."""
    if "\x00" in op.message_id:
        return Deleted(message_id=op.message_id, existed=False)
    row = db.execute(_DELETE, {"id": op.message_id, "expected": expected}).fetchone()
    if row is not None:
        _log(db, "delete", False, op.message_id, row[0], row[1], wall_ms())
    if row is None and expected is not None:
        stored = get_message(db, op.message_id)
        if stored is not None:
            check_expected(stored, expected)
    return Deleted(message_id=op.message_id, existed=row is not None)


_RESTORE = (
    f"INSERT INTO {MESSAGES} ({COLUMNS}, seq)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET conversation_id = excluded.conversation_id,"
    " role = excluded.role, content = excluded.content, metadata = excluded.metadata,"
    " status = excluded.status, client_message_id = excluded.client_message_id,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at"
    f" WHERE {MESSAGES}.updated_at < excluded.updated_at"
    " RETURNING xmax = 0"
)
# A copy keeps the seq it brings (0: the next one), and moves the counter past it.
_RESTORE_SEQ = f"""INSERT INTO {CONVERSATIONS} AS c
    (id, next_seq, message_count, first_at, last_at)
    VALUES (%(id)s, GREATEST(%(seq)s, 1) + 1, 0, %(at)s, %(at)s)
    ON CONFLICT (id) DO UPDATE SET next_seq = CASE WHEN %(seq)s > 0
        THEN GREATEST(c.next_seq, %(seq)s + 1) ELSE c.next_seq + 1 END
    RETURNING CASE WHEN %(seq)s > 0 THEN %(seq)s ELSE next_seq - 1 END"""
_COUNT_ONE = (
    f"UPDATE {CONVERSATIONS} SET message_count = message_count + 1,"
    " last_at = GREATEST(last_at, %s) WHERE id = %s"
)


def restore_message(db: Executes, message: Message) -> bool:
    """Write ``message`` as given unless its id is stored with an ``updated_at`` at or after
    the message's; True if written. Another message holding its client id is a Conflict."""
    check_storable(message, message.id)
    if message.client_message_id is not None:
        holder = _by_client_id(db, message.conversation_id, message.client_message_id)
        if holder is not None and holder.id != message.id:
            raise Conflict(
                f"client_message_id: {message.client_message_id!r} already names message"
                f" {holder.id!r} in conversation {message.conversation_id!r},"
                f" not {message.id!r}"
            )
    at = message.created_at
    seq_row = db.execute(
        _RESTORE_SEQ, {"id": message.conversation_id, "seq": message.seq, "at": at}
    ).fetchone()
    assert seq_row is not None
    row = db.execute(
        _RESTORE,
        (
            message.id,
            message.conversation_id,
            message.role,
            encode_json(message.content),
            encode_json(message.metadata) if message.metadata else "{}",
            message.status,
            message.client_message_id,
            message.created_at,
            message.updated_at,
            seq_row[0],
        ),
    ).fetchone()
    if row is None:
        return False
    if row[0]:  # a new row, not an older copy brought up to date
        db.execute(_COUNT_ONE, (at, message.conversation_id))
    complete = message.status == "complete"
    kind = ("add" if complete else "reserve") if row[0] else "update_content"
    _log(db, kind, complete, message.id, message.conversation_id, seq_row[0], message.updated_at)
    return True


def landed(db: Executes, results: Sequence[Any]) -> bool:
    """Whether the writes that gave ``results`` are in the database (after a COMMIT whose
    answer was lost with the connection)."""
    return rows.landed(results, lambda message_id: get_message(db, message_id))


# --- reads ------------------------------------------------------------------


def get_messages(db: Executes, message_ids: Sequence[str]) -> list[Message]:
    ids = [i for i in message_ids if "\x00" not in i]
    rows = db.execute(f"{_SELECT} WHERE id = ANY(%s)", (ids,)).fetchall()
    return [message_from_row(row) for row in rows]


def list_messages(
    db: Executes,
    conversation_id: str,
    limit: int | None,
    after_seq: int | None = None,
    roles: Sequence[str] | None = None,
) -> list[Message]:
    """The conversation's messages in seq order (see ``queries.messages``)."""
    if "\x00" in conversation_id:
        return []
    sql, params = queries.messages(DIALECT, conversation_id, limit, after_seq, roles)
    return [message_from_row(row) for row in db.execute(sql, params).fetchall()]


def list_reserved(db: Executes, updated_before: int, limit: int) -> list[Message]:
    """Messages still ``reserved`` and last written before ``updated_before``, oldest first."""
    sql, params = queries.reserved(DIALECT, updated_before, limit)
    return [message_from_row(row) for row in db.execute(sql, params).fetchall()]


def scan(
    db: Executes, after_id: str | None, limit: int, *, complete_only: bool = False
) -> list[Message]:
    """Up to ``limit`` messages whose id sorts after ``after_id`` (byte order), in id order."""
    sql, params = queries.page(DIALECT, after_id, limit, complete_only=complete_only)
    return [message_from_row(row) for row in db.execute(sql, params).fetchall()]


# --- forgetting a conversation ---------------------------------------------


def forget_conversation(db: Executes, op: Forget) -> Forgotten:
    """Delete every message of the conversation; the index triggers queue their points'
    deletion. The rows' bytes stay in the table's pages until ``VACUUM`` reuses them."""
    gone = db.execute(
        f"DELETE FROM {MESSAGES} WHERE conversation_id = %s RETURNING id, seq",
        (op.conversation_id,),
    ).fetchall()
    if gone:
        db.execute(
            f"UPDATE {CONVERSATIONS} SET message_count = message_count - %s WHERE id = %s",
            (len(gone), op.conversation_id),
        )
        at = wall_ms()
        for message_id, seq in sorted(gone, key=lambda row: row[1]):
            _log(db, "delete", False, message_id, op.conversation_id, seq, at)
    return Forgotten(conversation_id=op.conversation_id, deleted=len(gone))


# --- compaction -----------------------------------------------------------


def compact_conversation(db: Executes, op: Compact, *, message_id: str, now: int) -> Compacted:
    """Write the compaction row, with the conversation's next seq."""
    row = db.execute(
        _INSERT,
        (
            message_id,
            op.conversation_id,
            None,
            COMPACTION_ROLE,
            op.content_json,
            op.metadata_json,
            "complete",
            None,
            now,
            False,
        ),
    ).fetchone()
    if row is None or row[0] is None:
        raise Conflict(f"message_id: a message with id {message_id!r} already exists")
    _log(db, "add", True, message_id, op.conversation_id, row[0], now)
    return Compacted(message=rows.compaction_message(op, message_id, now, row[0]))
