"""Commands that only read never create a database, an index or SQLite's side files."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from .test_cli import line, run

# Commands that only read, and sweep, which changes only messages already there.
READ_ONLY = [
    ("show", "c1"), ("search", "x"), ("doctor",), ("plugins",), ("sweep",), ("changes",)
]  # fmt: skip
# Every command but demo, ingest and plugins needs a database to be there.
NEEDS_A_DATABASE = [*(a for a in READ_ONLY if a != ("plugins",)), ("reindex",)]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("args", NEEDS_A_DATABASE, ids=lambda a: a[0])
def test_a_command_on_a_missing_database_says_so_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run(tmp_path, *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"no database at {tmp_path / 'anchorline.db'}" in result.stderr
    assert "anchorline ingest" in result.stderr  # how to create one
    assert listing(tmp_path) == []


def test_only_a_file_path_is_refused_for_not_existing(tmp_path: Path) -> None:
    result = run(tmp_path, "--db", "sub/notes.db", "show", "c1")
    assert result.returncode == 1 and "no database at" in result.stderr
    assert listing(tmp_path) == []
    # An in-memory database and a server URL are not paths: never "no database at".
    for db in (":memory:", "postgresql://localhost/anchorline"):
        result = run(tmp_path, "--db", db, "--index", "none", "show", "c1")
        assert result.returncode == 1
        assert "no database at" not in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert listing(tmp_path) == []


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: a[0])
def test_a_read_only_command_on_an_existing_database_leaves_no_new_file(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    added = line("add", conversation_id="c1", role="user", content="x")
    assert run(tmp_path, "--index", "none", "ingest", "-", stdin=added).returncode == 0
    assert listing(tmp_path) == ["anchorline.db"]
    result = run(tmp_path, *args)
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) == ["anchorline.db"]  # no index folder, no -wal or -shm
    if args[0] in ("search", "doctor"):
        assert result.returncode == 1
        index = tmp_path / "anchorline.db.index"
        assert result.stderr == (
            f"anchorline: error: no index at {index}: build it with 'anchorline reindex'\n"
        )
    else:
        assert result.returncode == 0, result.stderr
    if args[0] == "plugins":
        assert "no indexer: no index at" in result.stdout
    # Once the index is built, the command uses it and still adds no file.
    assert run(tmp_path, "reindex").returncode == 0
    assert listing(tmp_path) == ["anchorline.db", "anchorline.db.index"]
    result = run(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path) == ["anchorline.db", "anchorline.db.index"]


def test_a_folder_given_as_the_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = run(tmp_path, "--db", "data", "ingest", "-", stdin="")
    assert result.returncode == 1
    assert result.stderr == "anchorline: error: --db: data is a folder, not a database file\n"


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: a[0])
def test_a_read_only_command_on_an_empty_postgres_database_creates_no_schema(
    tmp_path: Path, postgres_url: str, args: tuple[str, ...]
) -> None:
    result = run(tmp_path, "--db", postgres_url, "--index", "none", *args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    if args[0] in ("search", "doctor"):  # they need an index: that is said first
        assert "no index" in result.stderr
    else:
        assert "no Anchorline store in PostgreSQL database" in result.stderr
        assert "anchorline ingest" in result.stderr
    with psycopg.connect(postgres_url) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = 'anchorline'"
        ).fetchall()
    assert schemas == []
    assert listing(tmp_path) == []
    # Once something was written, the same command reads it.
    added = line("add", conversation_id="c1", role="user", content="x")
    written = run(tmp_path, "--db", postgres_url, "--index", "none", "ingest", "-", stdin=added)
    assert written.returncode == 0, written.stderr
    again = run(tmp_path, "--db", postgres_url, "--index", "none", *args)
    assert "no Anchorline store" not in again.stderr and "Traceback" not in again.stderr
