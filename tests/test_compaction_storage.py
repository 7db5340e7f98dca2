"""Compactions in the SQLite file and the index: never indexed, and a version 2 file takes them."""

from __future__ import annotations

from pathlib import Path

import apsw

from anchorline import Add, Pipeline

# The version 2 layout, as Anchorline wrote it before the conversation log.
V2_SCHEMA = """
CREATE TABLE anchorline_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'complete')),
    client_message_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE INDEX messages_reserved ON messages (updated_at) WHERE status = 'reserved';
CREATE TABLE index_outbox (
    message_id TEXT PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('upsert', 'payload', 'delete')),
    enqueued_at INTEGER NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    next_attempt_at INTEGER NOT NULL DEFAULT 0, lease_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO anchorline_meta VALUES ('schema_version', '2'), ('application', 'anchorline');
INSERT INTO messages VALUES ('m1', 'c', 'user', '"hello"', '{}', 'complete', NULL, 1000, 1000);
"""


def test_a_version_2_file_is_upgraded_to_take_compactions(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = apsw.Connection(str(path))
    conn.execute(V2_SCHEMA)
    conn.close()
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        [hello] = pipeline.messages("c")
        compaction = pipeline.compact("c", "a greeting", hello.seq + 1).message
        assert pipeline.context("c") == [compaction]
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    try:
        conn.execute(
            "INSERT INTO messages (id, conversation_id, role, content, metadata,"
            " status, created_at, updated_at) VALUES ('x', 'c', 'bogus', '1', '{}',"
            " 'complete', 1, 1)"
        )
    except apsw.ConstraintError:
        pass
    else:
        raise AssertionError("an unknown role was stored")
    conn.close()


def test_a_compaction_is_never_indexed_and_the_index_stays_consistent(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        said = [
            pipeline.persist(Add(conversation_id="c", role="user", content=f"pelican {i}")).message
            for i in range(3)
        ]
        compaction = pipeline.compact("c", "flamingo summary", said[2].seq).message
        pipeline.flush_index(timeout=30)
        assert pipeline.index_status().pending == 0
        hits = pipeline.search("flamingo summary", limit=10)
        assert compaction.id not in {hit.message.id for hit in hits}
        assert len(hits) == 3
        assert pipeline.indexer().index.count() == 3  # type: ignore[union-attr]
    # Opened again, the index is found consistent: nothing is queued for a repair.
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        assert pipeline.index_status().pending == 0
        assert pipeline.indexer().index.count() == 3  # type: ignore[union-attr]
