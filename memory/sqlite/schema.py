"""The database schema, its version record, and the check that refuses foreign files."""

from __future__ import annotations

import apsw

from anchorline.errors import IncompatibleStore

SCHEMA_VERSION = 3
APPLICATION_ID = 0x414E4348  # "ANCH": marks the file as Anchorline's in its header

_ROLES = "'user', 'assistant', 'system', 'tool', 'compaction'"

_ENQUEUE = """
    INSERT INTO index_outbox (message_id, action, enqueued_at)
    VALUES ({id}, '{action}', {at})
    ON CONFLICT (message_id) DO UPDATE SET
        action = {merge}, enqueued_at = excluded.enqueued_at, seq = seq + 1,
        attempts = 0, last_error = NULL, next_attempt_at = 0;"""

# Every b-tree a write touches costs a WAL page per commit, so messages keep
# only the indexes the reads need: by id, by conversation in order (seq, which
# is also what makes a duplicate seq impossible), by client id, and the
# reserved placeholders the sweep looks for.
_MESSAGE_INDEXES = """
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_reserved ON messages (updated_at) WHERE status = 'reserved';
CREATE INDEX messages_compactions ON messages (conversation_id, seq) WHERE role = 'compaction';
"""


def _messages_table(name: str) -> str:
    return f"""CREATE TABLE {name} (
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ({_ROLES})),
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'complete')),
    client_message_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);"""


# The conversation log (docs/conversation-log.md). A conversation's row holds the
# next seq to hand out: the message INSERT reads it in a subquery, the insert
# trigger moves it past the new seq, so a seq is never handed out twice, even
# after a delete. Changes are ids only, in commit order (SQLite has one writer),
# ``cursor`` being the rowid: trimming always keeps the newest row, so a cursor
# is never reused.
LOG_TABLES = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    parent_id TEXT,
    next_seq INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX conversations_by_parent ON conversations (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE changes (
    cursor INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    final INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL
);
"""

# A change's ``at`` is the write's own time (the row's updated_at; a delete's, the
# wall clock), raised to the change before it when that one is later: writers'
# clocks differ (a burst of new messages runs the write clock ahead of the wall
# clock, see ids.Clock), and the feed's ``at`` never goes back in cursor order.
_CHANGE = """
    INSERT INTO changes (kind, final, message_id, conversation_id, seq, at)
    VALUES ({kind}, {row}.status = 'complete', {row}.id, {row}.conversation_id, {row}.seq,
            max({at}, coalesce((SELECT at FROM changes ORDER BY cursor DESC LIMIT 1), 0)));"""

# Written by triggers, like the index intents: whatever writes a message (the
# terminal, a batch, a direct CRUD call) logs it in the same transaction, and a
# write costs no extra round trip from Python.
LOG_TRIGGERS = f"""
CREATE TRIGGER log_on_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO conversations (id, next_seq, message_count, first_at, last_at)
    VALUES (NEW.conversation_id, NEW.seq + 1, 1, NEW.created_at, NEW.created_at)
    ON CONFLICT (id) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq),
        message_count = message_count + 1, last_at = max(last_at, excluded.last_at);{
    _CHANGE.format(
        kind="CASE NEW.status WHEN 'complete' THEN 'add' ELSE 'reserve' END",
        row="NEW",
        at="NEW.updated_at",
    )
}
END;

CREATE TRIGGER log_on_content AFTER UPDATE OF content ON messages
BEGIN {_CHANGE.format(kind="'update_content'", row="NEW", at="NEW.updated_at")}
END;

CREATE TRIGGER log_on_metadata AFTER UPDATE OF metadata ON messages
WHEN OLD.content IS NEW.content AND OLD.status IS NEW.status
BEGIN {_CHANGE.format(kind="'update'", row="NEW", at="NEW.updated_at")}
END;

CREATE TRIGGER log_on_delete AFTER DELETE ON messages
BEGIN
    UPDATE conversations SET message_count = message_count - 1 WHERE id = OLD.conversation_id;{
    _CHANGE.format(
        kind="'delete'", row="OLD", at="CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    ).replace("OLD.status = 'complete'", "0")
}
END;
"""

#: The version of LOG_TRIGGERS, kept in anchorline_meta ('log_triggers'): a file
#: whose triggers are older (or that has no record of them) gets them again on
#: open, as a PostgreSQL database gets its functions.
LOG_TRIGGERS_VERSION = 2
_LOG_TRIGGER_NAMES = ("log_on_insert", "log_on_content", "log_on_metadata", "log_on_delete")

SCHEMA = f"""
CREATE TABLE anchorline_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

{_messages_table("messages")}
{_MESSAGE_INDEXES}
{{log_tables}}
CREATE TABLE index_outbox (
    message_id TEXT PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('upsert', 'payload', 'delete')),
    enqueued_at INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
""".replace("{log_tables}", LOG_TABLES)

# Intents to index are written by triggers, so they commit with the message
# write whatever wrote it: the terminal, a direct CRUD call, another process.
# They are created when indexing is first switched on for the file, so a
# database without an index pays nothing for them.
INDEX_TRIGGERS = f"""
CREATE TRIGGER index_on_insert AFTER INSERT ON messages
WHEN NEW.status = 'complete'
BEGIN {_ENQUEUE.format(id="NEW.id", action="upsert", merge="'upsert'", at="NEW.updated_at")}
END;

CREATE TRIGGER index_on_content AFTER UPDATE OF content, status ON messages
WHEN NEW.status = 'complete' AND (OLD.content IS NOT NEW.content OR OLD.status IS NOT NEW.status)
BEGIN {_ENQUEUE.format(id="NEW.id", action="upsert", merge="'upsert'", at="NEW.updated_at")}
END;

CREATE TRIGGER index_on_metadata AFTER UPDATE OF metadata ON messages
WHEN NEW.status = 'complete' AND OLD.status = 'complete' AND OLD.content IS NEW.content
    AND OLD.metadata IS NOT NEW.metadata
BEGIN {
    _ENQUEUE.format(
        id="NEW.id",
        action="payload",
        merge="CASE WHEN action = 'upsert' THEN 'upsert' ELSE 'payload' END",
        at="NEW.updated_at",
    )
}
END;

CREATE TRIGGER index_on_delete AFTER DELETE ON messages
WHEN OLD.status = 'complete'
BEGIN {
    _ENQUEUE.format(
        id="OLD.id",
        action="delete",
        merge="'delete'",
        at="CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    )
}
END;
"""


# Version 1 kept a conversations table, upserted on every write and read by
# nothing: one more statement and b-tree per op. Version 2 drops it, and with
# it the foreign key, which means rebuilding the messages table.
_FROM_V1 = f"""
{_messages_table("messages_v2")}
INSERT INTO messages_v2 (rowid, id, conversation_id, role, content, metadata, status,
                         client_message_id, created_at, updated_at)
    SELECT rowid, id, conversation_id, role, content, metadata, status,
           client_message_id, created_at, updated_at FROM messages;
DROP TABLE messages;
DROP TABLE conversations;
ALTER TABLE messages_v2 RENAME TO messages;
UPDATE anchorline_meta SET value = '2' WHERE key = 'schema_version';
"""

# Version 3 numbers each conversation's messages (seq, in created_at and rowid
# order), keeps a row per conversation, and starts the change feed (empty: it
# begins at the upgrade).
_FROM_V2 = f"""
DROP INDEX IF EXISTS messages_by_conversation;
DROP INDEX IF EXISTS messages_by_client_id;
DROP INDEX IF EXISTS messages_reserved;
WITH numbered AS (
    SELECT rowid AS r,
           row_number() OVER (PARTITION BY conversation_id ORDER BY created_at, rowid) AS n
    FROM messages)
UPDATE messages SET seq = numbered.n FROM numbered WHERE messages.rowid = numbered.r;
{_MESSAGE_INDEXES}
{LOG_TABLES}
INSERT INTO conversations (id, next_seq, message_count, first_at, last_at)
    SELECT conversation_id, max(seq) + 1, count(*), min(created_at), max(created_at)
    FROM messages GROUP BY conversation_id;
{LOG_TRIGGERS}
UPDATE anchorline_meta SET value = '3' WHERE key = 'schema_version';
"""


def _tables(conn: apsw.Connection, where: str) -> set[str]:
    try:
        return {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except apsw.NotADBError:
        raise IncompatibleStore(f"{where} is not a SQLite database") from None


def _version(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT value FROM anchorline_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _check_version(conn: apsw.Connection, where: str) -> None:
    version = _version(conn)
    if version > SCHEMA_VERSION:
        raise IncompatibleStore(
            f"{where} has schema version {version}; this Anchorline reads up to {SCHEMA_VERSION}:"
            " upgrade anchorline"
        )
    if version < 1:
        raise IncompatibleStore(f"{where} has an Anchorline table but no schema version")


def ensure_schema(conn: apsw.Connection, where: str) -> None:
    """Create the schema in a new or empty file, or check the one that is there.

    Runs before any pragma that writes, so a file that is not Anchorline's is
    refused with :class:`IncompatibleStore` and left byte-for-byte unchanged.
    """
    tables = _tables(conn, where)
    if "anchorline_meta" in tables:
        _check_version(conn, where)
        if _version(conn) < SCHEMA_VERSION:
            _upgrade(conn)
        if _log_triggers(conn) != LOG_TRIGGERS_VERSION and not conn.readonly("main"):
            _renew_log_triggers(conn)
        return
    if tables:
        names = ", ".join(sorted(tables)[:5])
        raise IncompatibleStore(
            f"{where} is a SQLite database but not an Anchorline one (its tables: {names})"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have initialised the file while we waited for the lock.
        if "anchorline_meta" not in _tables(conn, where):
            conn.execute(SCHEMA)
            conn.execute(LOG_TRIGGERS)
            conn.execute(
                "INSERT INTO anchorline_meta VALUES"
                " ('schema_version', ?), ('application', 'anchorline'), ('log_triggers', ?)",
                (str(SCHEMA_VERSION), str(LOG_TRIGGERS_VERSION)),
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _check_version(conn, where)


def _upgrade(conn: apsw.Connection) -> None:
    """Bring an older file to the current schema in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _version(conn) == 1:  # unless another process upgraded it while we waited
            conn.execute(_FROM_V1)
            indexed = conn.execute(
                "SELECT 1 FROM anchorline_meta WHERE key = 'index_enabled'"
            ).fetchone()
            if indexed:  # dropping the old table dropped its triggers
                conn.execute(INDEX_TRIGGERS)
        if _version(conn) == 2:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
            if "seq" not in columns:
                conn.execute("ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
            conn.execute(_FROM_V2)
            allow_compaction_role(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _log_triggers(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT value FROM anchorline_meta WHERE key = 'log_triggers'").fetchone()
    return int(row[0]) if row else 1


def _renew_log_triggers(conn: apsw.Connection) -> None:
    """Replace the change feed's triggers of a file made by an older Anchorline."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _log_triggers(conn) != LOG_TRIGGERS_VERSION:  # unless another process did
            for name in _LOG_TRIGGER_NAMES:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.execute(LOG_TRIGGERS)
            conn.execute(
                "INSERT INTO anchorline_meta VALUES ('log_triggers', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(LOG_TRIGGERS_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def enable_index(conn: apsw.Connection) -> None:
    """Switch on the index triggers, queueing every complete message written so far."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM anchorline_meta WHERE key = 'index_enabled'").fetchone():
            conn.execute("COMMIT")
            return
        conn.execute("INSERT INTO anchorline_meta VALUES ('index_enabled', '1')")
        conn.execute(INDEX_TRIGGERS)
        conn.execute(
            """INSERT OR IGNORE INTO index_outbox (message_id, action, enqueued_at)
               SELECT id, 'upsert', updated_at FROM messages WHERE status = 'complete'"""
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def allow_compaction_role(conn: apsw.Connection) -> None:
    """Part of version 3: the messages table also takes the role ``compaction`` (the
    rows ``Compact`` writes). Widening a CHECK changes nothing on disk, so the table's
    definition is edited in place (SQLite's documented procedure for loosening a
    constraint) rather than the table copied. Run inside the upgrade's transaction."""
    sql = str(
        conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
        ).fetchall()[0][0]
    )
    if "'compaction'" not in sql:  # a table rebuilt from version 1 already takes it
        version = int(str(conn.execute("PRAGMA schema_version").fetchall()[0][0]))
        conn.execute("PRAGMA writable_schema = ON")
        try:
            conn.execute(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'messages'",
                (sql.replace("'tool')", "'tool', 'compaction')", 1),),
            )
            conn.execute(f"PRAGMA schema_version = {version + 1}")
        finally:
            conn.execute("PRAGMA writable_schema = OFF")
