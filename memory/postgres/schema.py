"""The PostgreSQL schema, its version record, and the check that refuses foreign data.

A PostgreSQL database is usually shared, so Anchorline keeps its tables in a
schema of its own, ``anchorline``, and leaves everything else in the database
alone. The tables mirror the SQLite store's: content and metadata are ``TEXT``
holding the op's JSON exactly as encoded (``jsonb`` would reorder keys, drop
duplicates and refuse ``\\u0000``), ids compare byte by byte (``COLLATE "C"``,
like SQLite), and ``rowid`` orders messages created in the same millisecond.
"""

from __future__ import annotations

from typing import Any

import psycopg

from anchorline.errors import IncompatibleStore

SCHEMA = "anchorline"
SCHEMA_VERSION = 2
#: Taken (per transaction) by whoever creates the schema or switches on indexing:
#: ``CREATE ... IF NOT EXISTS`` run by two sessions at once fails on catalog keys.
LOCK = "SELECT pg_advisory_xact_lock(1095648072, 1)"  # 0x414E4348, "ANCH"

_ROLES = "'user', 'assistant', 'system', 'tool', 'compaction'"

# Every index a write touches costs a b-tree insert per message, so messages keep
# only the indexes the reads need (as in SQLite): by id, by conversation in order,
# by client id, and the reserved placeholders the sweep looks for.
DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};

CREATE TABLE {SCHEMA}.anchorline_meta (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE {SCHEMA}.messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL,
    role TEXT NOT NULL CHECK (role IN ({_ROLES})),
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'complete')),
    client_message_id TEXT COLLATE "C",
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE UNIQUE INDEX messages_by_client_id ON {SCHEMA}.messages (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_reserved ON {SCHEMA}.messages (updated_at) WHERE status = 'reserved';

{{log}}
CREATE TABLE {SCHEMA}.index_outbox (
    message_id TEXT COLLATE "C" PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('upsert', 'payload', 'delete')),
    enqueued_at BIGINT NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0
);
-- Claims take the oldest items first; a reindex queues every message at once.
CREATE INDEX index_outbox_by_age ON {SCHEMA}.index_outbox (enqueued_at);

-- The intent to index a message, queued by the triggers below in the transaction
-- that wrote the message. A message queued again gets a new seq, so a drainer
-- finishing its older claim leaves the new intent in place.
CREATE FUNCTION {SCHEMA}.queue_for_index() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO {SCHEMA}.index_outbox AS o (message_id, action, enqueued_at)
        VALUES (OLD.id, 'delete', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
        ON CONFLICT (message_id) DO UPDATE SET
            action = 'delete', enqueued_at = excluded.enqueued_at, seq = o.seq + 1,
            attempts = 0, last_error = NULL, next_attempt_at = 0;
        RETURN OLD;
    END IF;
    INSERT INTO {SCHEMA}.index_outbox AS o (message_id, action, enqueued_at)
    VALUES (NEW.id, TG_ARGV[0], NEW.updated_at)
    ON CONFLICT (message_id) DO UPDATE SET
        action = CASE WHEN TG_ARGV[0] = 'payload' AND o.action = 'upsert' THEN 'upsert'
                      ELSE TG_ARGV[0] END,
        enqueued_at = excluded.enqueued_at, seq = o.seq + 1,
        attempts = 0, last_error = NULL, next_attempt_at = 0;
    RETURN NEW;
END
$$;
"""

# The conversation log (docs/conversation-log.md). A message takes its seq from
# its conversation's row, upserted in the INSERT's own statement: the row stays
# locked until the transaction ends, so two writers to one conversation take
# turns and never hand out one seq twice. Changes get their cursor from
# changes_head at the end of the transaction (see transaction.py), which is
# what makes cursor order commit order.
LOG_DDL = f"""
ALTER TABLE {SCHEMA}.messages ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX messages_by_seq ON {SCHEMA}.messages (conversation_id, seq);
CREATE TABLE {SCHEMA}.conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    parent_id TEXT COLLATE "C",
    next_seq BIGINT NOT NULL,
    message_count BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
CREATE INDEX conversations_by_parent ON {SCHEMA}.conversations (parent_id)
    WHERE parent_id IS NOT NULL;
CREATE TABLE {SCHEMA}.changes (
    cursor BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    final BOOLEAN NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE {SCHEMA}.changes_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO {SCHEMA}.changes_head VALUES (1, 0);

"""

# PL/pgSQL keeps the plans of these statements for the session, so a write sent
# as a simple query (see crud.Session) does not plan them every time.
LOG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.take_seq(conversation TEXT, parent TEXT, at BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE taken BIGINT;
BEGIN
    INSERT INTO {SCHEMA}.conversations AS c
        (id, parent_id, next_seq, message_count, first_at, last_at)
    VALUES (conversation, parent, 2, 1, at, at)
    ON CONFLICT (id) DO UPDATE SET next_seq = c.next_seq + 1,
        message_count = c.message_count + 1, last_at = GREATEST(c.last_at, excluded.last_at)
    RETURNING next_seq - 1 INTO taken;
    RETURN taken;
END
$$;
-- A change's at is the write's own time, raised to the change before it when that
-- one is later (writers' clocks differ), so at never goes back in cursor order.
-- The change before is read once the head row is held, by a statement of its
-- own: its snapshot, taken then, sees that change committed.
CREATE OR REPLACE FUNCTION {SCHEMA}.log_change(
    kind TEXT, final BOOLEAN, message_id TEXT, conversation TEXT, seq BIGINT, at BIGINT)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE taken BIGINT; before BIGINT;
BEGIN
    UPDATE {SCHEMA}.changes_head SET last = last + 1 WHERE id = 1 RETURNING last INTO taken;
    SELECT c.at INTO before FROM {SCHEMA}.changes AS c WHERE c.cursor = taken - 1;
    INSERT INTO {SCHEMA}.changes (cursor, kind, final, message_id, conversation_id, seq, at)
    VALUES (taken, kind, final, message_id, conversation, seq, GREATEST(at, before));
END
$$;
-- The same for a transaction's several changes, numbered in order.
CREATE OR REPLACE FUNCTION {SCHEMA}.log_changes(
    kinds TEXT[], finals BOOLEAN[], message_ids TEXT[], conversations TEXT[], seqs BIGINT[],
    ats BIGINT[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE base BIGINT; before BIGINT;
BEGIN
    UPDATE {SCHEMA}.changes_head SET last = last + cardinality(kinds) WHERE id = 1
    RETURNING last - cardinality(kinds) INTO base;
    SELECT c.at INTO before FROM {SCHEMA}.changes AS c WHERE c.cursor = base;
    INSERT INTO {SCHEMA}.changes (cursor, kind, final, message_id, conversation_id, seq, at)
    SELECT base + t.i, t.kind, t.final, t.message_id, t.conversation_id, t.seq,
           GREATEST(max(t.at) OVER (ORDER BY t.i), before)
    FROM unnest(kinds, finals, message_ids, conversations, seqs, ats)
         WITH ORDINALITY AS t(kind, final, message_id, conversation_id, seq, at, i);
END
$$;
-- A new message's row, with its seq. In a transaction of several statements
-- (p_alone false) a row that meets a stored one gives its seq back and the
-- answer is NULL. Alone (the statement is its own transaction, committed as it
-- ends) the write goes in the change feed here; a repeated client id writes
-- nothing and answers NULL, and any other row that meets a stored one undoes
-- the whole statement (SQLSTATE AL001). Either way the caller then settles the
-- op in a transaction of its own.
CREATE OR REPLACE FUNCTION {SCHEMA}.insert_message(
    p_id TEXT, p_conversation TEXT, p_parent TEXT, p_role TEXT, p_content TEXT,
    p_metadata TEXT, p_status TEXT, p_client TEXT, p_at BIGINT, p_alone BOOLEAN)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE taken BIGINT;
BEGIN
    -- A repeated client id is a retry, not an error: no ERROR in the server's log.
    IF p_alone AND p_client IS NOT NULL AND EXISTS (
        SELECT 1 FROM {SCHEMA}.messages
        WHERE conversation_id = p_conversation AND client_message_id = p_client) THEN
        RETURN NULL;
    END IF;
    taken := {SCHEMA}.take_seq(p_conversation, p_parent, p_at);
    INSERT INTO {SCHEMA}.messages (id, conversation_id, role, content, metadata, status,
                                   client_message_id, created_at, updated_at, seq)
    VALUES (p_id, p_conversation, p_role, p_content, p_metadata, p_status, p_client,
            p_at, p_at, taken)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        IF p_alone THEN
            RAISE EXCEPTION 'message % meets a stored row', p_id USING ERRCODE = 'AL001';
        END IF;
        UPDATE {SCHEMA}.conversations
        SET next_seq = next_seq - 1, message_count = message_count - 1 WHERE id = p_conversation;
        RETURN NULL;
    END IF;
    IF p_alone THEN
        PERFORM {SCHEMA}.log_change(CASE WHEN p_status = 'complete' THEN 'add' ELSE 'reserve' END,
                                    p_status = 'complete', p_id, p_conversation, taken, p_at);
    END IF;
    RETURN taken;
END
$$;
-- A message's new content, if its guards hold (a partial update only reopens
-- nothing; p_expected is the caller's updated_at guard): no row when they do
-- not, and nothing written. Alone, as above, the write goes in the feed here.
CREATE OR REPLACE FUNCTION {SCHEMA}.update_content(
    p_id TEXT, p_content TEXT, p_final BOOLEAN, p_now BIGINT, p_expected BIGINT,
    p_alone BOOLEAN)
RETURNS TABLE (o_conversation TEXT, o_role TEXT, o_metadata TEXT, o_client TEXT,
               o_created BIGINT, o_updated BIGINT, o_seq BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {SCHEMA}.messages AS m
    SET content = p_content, status = CASE WHEN p_final THEN 'complete' ELSE 'reserved' END,
        updated_at = GREATEST(p_now, m.updated_at + 1)
    WHERE m.id = p_id AND (p_final OR m.status = 'reserved')
      AND (p_expected IS NULL OR m.updated_at = p_expected)
    RETURNING m.conversation_id, m.role, m.metadata, m.client_message_id, m.created_at,
              m.updated_at, m.seq
    INTO o_conversation, o_role, o_metadata, o_client, o_created, o_updated, o_seq;
    IF FOUND THEN
        IF p_alone THEN
            PERFORM {SCHEMA}.log_change('update_content', p_final, p_id, o_conversation,
                                        o_seq, o_updated);
        END IF;
        RETURN NEXT;
    END IF;
END
$$;
"""
LOG_DDL += LOG_FUNCTIONS
#: The version of LOG_FUNCTIONS, kept in anchorline_meta ('functions'): a database
#: whose functions are older (or that has none) gets them all again on open.
FUNCTIONS_VERSION = 3
DDL = DDL.replace("{log}", LOG_DDL)

# Version 2 numbers each conversation's messages (in created_at and rowid order),
# keeps a row per conversation, and starts the change feed (empty).
_FROM_V1 = f"""
DROP INDEX IF EXISTS {SCHEMA}.messages_by_conversation;
{LOG_DDL.split(";", 1)[0]};
UPDATE {SCHEMA}.messages AS m SET seq = n.seq FROM (
    SELECT rowid, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at, rowid)
        AS seq FROM {SCHEMA}.messages) AS n
WHERE m.rowid = n.rowid;
{LOG_DDL.split(";", 1)[1]}
INSERT INTO {SCHEMA}.conversations (id, next_seq, message_count, first_at, last_at)
    SELECT conversation_id, max(seq) + 1, count(*), min(created_at), max(created_at)
    FROM {SCHEMA}.messages GROUP BY conversation_id;
UPDATE {SCHEMA}.anchorline_meta SET value = '2' WHERE key = 'schema_version';
"""

# Created when indexing is first switched on for the database, so a database
# without an index pays nothing for them (as in SQLite).
INDEX_TRIGGERS = f"""
CREATE TRIGGER index_on_insert AFTER INSERT ON {SCHEMA}.messages FOR EACH ROW
    WHEN (NEW.status = 'complete')
    EXECUTE FUNCTION {SCHEMA}.queue_for_index('upsert');
CREATE TRIGGER index_on_content AFTER UPDATE OF content, status ON {SCHEMA}.messages FOR EACH ROW
    WHEN (NEW.status = 'complete'
          AND (OLD.content IS DISTINCT FROM NEW.content OR OLD.status IS DISTINCT FROM NEW.status))
    EXECUTE FUNCTION {SCHEMA}.queue_for_index('upsert');
CREATE TRIGGER index_on_metadata AFTER UPDATE OF metadata ON {SCHEMA}.messages FOR EACH ROW
    WHEN (NEW.status = 'complete' AND OLD.status = 'complete'
          AND OLD.content IS NOT DISTINCT FROM NEW.content
          AND OLD.metadata IS DISTINCT FROM NEW.metadata)
    EXECUTE FUNCTION {SCHEMA}.queue_for_index('payload');
CREATE TRIGGER index_on_delete AFTER DELETE ON {SCHEMA}.messages FOR EACH ROW
    WHEN (OLD.status = 'complete')
    EXECUTE FUNCTION {SCHEMA}.queue_for_index('delete');
"""

_STATE = f"""
SELECT to_regclass('{SCHEMA}.anchorline_meta') IS NOT NULL,
       ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{SCHEMA}' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY 1 LIMIT 5)
"""
_META = f"SELECT key, value FROM {SCHEMA}.anchorline_meta WHERE key IN ('schema_version',"
_META += " 'application', 'index_enabled', 'functions')"


def _meta(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {key: value for key, value in conn.execute(_META).fetchall()}


def _check(meta: dict[str, str], where: str) -> None:
    if meta.get("application", "anchorline") != "anchorline":
        raise IncompatibleStore(
            f"schema {SCHEMA} in {where} belongs to {meta['application']!r}, not Anchorline:"
            " use another database"
        )
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise IncompatibleStore(
            f"{where} has Anchorline schema version {version}; this Anchorline reads up to"
            f" {SCHEMA_VERSION}: upgrade anchorline"
        )
    if version < 1:
        raise IncompatibleStore(
            f"{where} has an {SCHEMA}.anchorline_meta table but no schema version"
        )


def has_schema(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database holds Anchorline's schema (made by an earlier open)."""
    row = conn.execute(_STATE).fetchone()
    return bool(row and row[0])


def ensure_schema(conn: psycopg.Connection[Any], where: str) -> bool:
    """Create the schema in a database that lacks it, or check the one that is there;
    return whether indexing is switched on.

    Tables of other schemas are no concern; a schema ``anchorline`` holding other
    tables is refused with :class:`IncompatibleStore`, and so is a newer version.
    Safe when several processes open a new database at once: the creation runs
    under an advisory lock and looks again once it holds it.
    """
    exists, tables = conn.execute(_STATE).fetchone() or (False, [])
    if not exists:
        with conn.transaction():
            conn.execute(LOCK)
            exists, tables = conn.execute(_STATE).fetchone() or (False, [])
            if not exists:
                if tables:
                    raise IncompatibleStore(
                        f"schema {SCHEMA} in {where} holds tables that are not Anchorline's"
                        f" ({', '.join(tables)}): use another database, or drop that schema"
                    )
                conn.execute(DDL)
                conn.execute(
                    f"INSERT INTO {SCHEMA}.anchorline_meta VALUES"
                    " ('schema_version', %s), ('application', 'anchorline'), ('functions', %s)",
                    (str(SCHEMA_VERSION), str(FUNCTIONS_VERSION)),
                )
    meta = _meta(conn)
    _check(meta, where)
    if int(meta["schema_version"]) < SCHEMA_VERSION:
        with conn.transaction():
            conn.execute(LOCK)
            if int(_meta(conn)["schema_version"]) == 1:  # unless another session upgraded it
                conn.execute(_FROM_V1)
                conn.execute(_ALLOW_COMPACTION)
    if meta.get("functions") != str(FUNCTIONS_VERSION):
        _update_functions(conn, where)
    return "index_enabled" in meta


def _update_functions(conn: psycopg.Connection[Any], where: str) -> None:
    """(Re)create the PL/pgSQL functions of a database made by an older Anchorline."""
    try:
        with conn.transaction():
            conn.execute(LOCK)
            conn.execute(LOG_FUNCTIONS)
            conn.execute(
                f"INSERT INTO {SCHEMA}.anchorline_meta VALUES ('functions', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(FUNCTIONS_VERSION),),
            )
    except psycopg.errors.InsufficientPrivilege:
        user = conn.info.user
        raise IncompatibleStore(
            f"{where} was made by an older Anchorline, and this one brings new functions to"
            f" schema {SCHEMA} that user {user!r} may not create: open it once as the"
            " schema's owner (any anchorline command that opens it will do), then again"
            " as this user"
        ) from None


# The compactions of a conversation, newest first, without a walk over its messages.
_COMPACTIONS_INDEX = f"""CREATE INDEX IF NOT EXISTS messages_compactions
    ON {SCHEMA}.messages (conversation_id, seq) WHERE role = 'compaction';
"""
DDL += _COMPACTIONS_INDEX

# Part of version 2: the messages table also takes the role ``compaction`` (the
# rows ``Compact`` writes). A wider CHECK holds for every stored row, so it is
# added NOT VALID: no scan of the table.
_ALLOW_COMPACTION = f"""
ALTER TABLE {SCHEMA}.messages DROP CONSTRAINT IF EXISTS messages_role_check;
ALTER TABLE {SCHEMA}.messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ({_ROLES})) NOT VALID;
{_COMPACTIONS_INDEX}"""
