"""The store refuses files that are not Anchorline's, and leaves them untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from pipeline import Add, IncompatibleStore, Pipeline, StorageUnavailable


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
