"""The store refuses files that are not Anchorline's, and leaves them untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from anchorline import Add, IncompatibleStore, Pipeline, StorageUnavailable, UpdateContent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = digest(path)
    with pytest.raises(IncompatibleStore, match="not an Anchorline one") as info:
        Pipeline.open(str(path), load_entrypoints=False)
    assert "users" in str(info.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = digest(path)
    with pytest.raises(IncompatibleStore, match="not a SQLite database"):
        Pipeline.open(str(path), load_entrypoints=False)
    assert digest(path) == before


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Pipeline.open(str(path), load_entrypoints=False).close()
    conn = apsw.Connection(str(path))
    conn.execute("UPDATE anchorline_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(IncompatibleStore, match="schema version 99"):
        Pipeline.open(str(path), load_entrypoints=False)


def test_an_empty_file_is_initialised_and_reopens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="kept"))
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        assert [m.content for m in pipeline.messages("c")] == ["kept"]
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x414E4348
    conn.close()


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable, match="cannot open database"):
        Pipeline.open(str(tmp_path / "no" / "such" / "dir.db"), load_entrypoints=False)


# The version 1 layout, as Anchorline 0.1.0 wrote it.
V1_SCHEMA = """
CREATE TABLE anchorline_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE conversations (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    last_message_at INTEGER
);
CREATE TABLE messages (
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) DEFERRABLE INITIALLY DEFERRED,
    role TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL, status TEXT NOT NULL,
    client_message_id TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_by_client_id ON messages (conversation_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
CREATE TABLE index_outbox (
    message_id TEXT PRIMARY KEY, action TEXT NOT NULL, enqueued_at INTEGER NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    next_attempt_at INTEGER NOT NULL DEFAULT 0, lease_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO anchorline_meta VALUES ('schema_version', '1'), ('application', 'anchorline'),
    ('index_enabled', '1');
INSERT INTO conversations VALUES ('c', 1000, 2000, 2000);
INSERT INTO messages VALUES
    ('m1', 'c', 'user', '"hello"', '{}', 'complete', 'turn-1', 1000, 1000),
    ('m2', 'c', 'assistant', '[]', '{}', 'reserved', NULL, 2000, 2000);
"""


def test_a_version_1_file_is_upgraded_in_place_with_its_messages(tmp_path: Path) -> None:
    from anchorline.memory.sqlite.schema import INDEX_TRIGGERS

    path = tmp_path / "v1.db"
    conn = apsw.Connection(str(path))
    conn.execute(V1_SCHEMA)
    conn.execute(INDEX_TRIGGERS)
    conn.close()
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        assert [(m.id, m.content, m.status, m.seq) for m in pipeline.messages("c")] == [
            ("m1", "hello", "complete", 1),
            ("m2", [], "reserved", 2),
        ]
        added = pipeline.persist(Add(conversation_id="c", role="user", content="next"))
        assert added.message.seq == 3
        replay = pipeline.persist(
            Add(conversation_id="c", role="user", content="hello", client_message_id="turn-1")
        )
        assert replay.deduplicated and replay.message.id == "m1"
        pipeline.persist(UpdateContent(message_id="m2", content="answer"))
    conn = apsw.Connection(str(path))
    columns = [r[1] for r in conn.execute("PRAGMA table_info(conversations)")]
    assert columns[:3] == ["id", "parent_id", "next_seq"]  # the new table, not version 1's
    version = conn.execute("SELECT value FROM anchorline_meta WHERE key = 'schema_version'")
    assert version.fetchone() == ("3",)
    # The index triggers came back with the rebuilt table: the final write was queued.
    queued = {r[0] for r in conn.execute("SELECT message_id FROM index_outbox")}
    assert queued == {"m2", added.message.id}
    conn.close()


def test_a_file_made_with_the_older_feed_triggers_gets_the_new_ones(tmp_path: Path) -> None:
    from anchorline.memory.sqlite.schema import LOG_TRIGGERS_VERSION

    from .contract.test_log import writes_after_a_burst

    path = str(tmp_path / "older.db")
    Pipeline.open(path, load_entrypoints=False).close()
    # As the previous Anchorline left it: a delete's change stamped by the wall clock
    # alone, and no record of the triggers' version.
    conn = apsw.Connection(path)
    conn.execute(
        """DROP TRIGGER log_on_delete;
        CREATE TRIGGER log_on_delete AFTER DELETE ON messages BEGIN
            INSERT INTO changes (kind, final, message_id, conversation_id, seq, at)
            VALUES ('delete', 0, OLD.id, OLD.conversation_id, OLD.seq,
                    CAST(unixepoch('subsec') * 1000 AS INTEGER));
        END;
        DELETE FROM anchorline_meta WHERE key = 'log_triggers';"""
    )
    conn.close()
    with Pipeline.open(path, load_entrypoints=False) as pipeline:
        ats = [c.at for c in writes_after_a_burst(pipeline)]
    assert ats == sorted(ats)
    conn = apsw.Connection(path)
    recorded = conn.execute("SELECT value FROM anchorline_meta WHERE key = 'log_triggers'")
    assert recorded.fetchone() == (str(LOG_TRIGGERS_VERSION),)
    conn.close()
