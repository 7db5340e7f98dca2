"""Faults of the database file itself: deleted or replaced while open, read-only,
in a read-only folder, and who may read it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from anchorline import Add, Pipeline, StorageUnavailable

from .conftest import close_within


def count(path: Path) -> int:
    conn = apsw.Connection(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def add(pipeline: Pipeline, text: str) -> str:
    return pipeline.persist(Add(conversation_id="c", role="user", content=text)).message.id


# --- deleted or replaced while open ----------------------------------------------------


def test_writes_to_a_deleted_database_file_raise_instead_of_vanishing(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    pipeline = Pipeline.open(str(db), load_entrypoints=False)
    add(pipeline, "before")
    db.unlink()
    with pytest.raises(StorageUnavailable) as info:
        add(pipeline, "after")
    message = str(info.value)
    assert str(db) in message and "deleted or replaced" in message and "reopen" in message
    close_within(pipeline)


def test_writes_to_a_database_replaced_by_another_file_raise_and_leave_it_intact(
    tmp_path: Path,
) -> None:
    db, other = tmp_path / "live.db", tmp_path / "other.db"
    pipeline = Pipeline.open(str(db), load_entrypoints=False)
    add(pipeline, "mine")
    with Pipeline.open(str(other), load_entrypoints=False) as replacement:
        kept = add(replacement, "theirs")
    os.replace(other, db)
    with pytest.raises(StorageUnavailable, match="deleted or replaced"):
        add(pipeline, "lost if accepted")
    close_within(pipeline)
    with Pipeline.open(str(db), load_entrypoints=False) as reopened:
        assert [m.id for m in reopened.messages("c")] == [kept]


# --- who may read it --------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_a_new_database_and_its_wal_and_shm_are_private_until_the_owner_shares_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "private.db"
    with Pipeline.open(str(db), load_entrypoints=False) as pipeline:
        add(pipeline, "secret")
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in tmp_path.iterdir()
            if path.name.startswith("private.db")
        }
    assert modes == {"private.db": 0o600, "private.db-wal": 0o600, "private.db-shm": 0o600}
    # A user who wants a group to read it sets the database's mode once; SQLite
    # gives the -wal and -shm files the same.
    db.chmod(0o640)
    with Pipeline.open(str(db), load_entrypoints=False) as pipeline:
        add(pipeline, "for the group")
        wal = stat.S_IMODE(Path(f"{db}-wal").stat().st_mode)
    assert (stat.S_IMODE(db.stat().st_mode), wal) == (0o640, 0o640)


# --- read-only files and folders ----------------------------------------------------------
#
# Root ignores file modes, so these checks run in a subprocess that cannot: as
# root, it runs under ``setpriv`` without CAP_DAC_OVERRIDE and
# CAP_DAC_READ_SEARCH (the owner's mode bits then apply to it as to any user);
# as another user, as it is.

ATTEMPT = textwrap.dedent(
    """
    import json, sys
    from anchorline import Add, Pipeline

    def attempt(path):
        try:
            with Pipeline.open(path, load_entrypoints=False) as pipeline:
                read = len(pipeline.messages("c"))
                pipeline.persist(Add(conversation_id="c", role="user", content="new"))
                return {"read": read, "written": True}
        except Exception as e:
            return {"error": type(e).__name__, "message": str(e)}

    print(json.dumps(attempt(sys.argv[1])))
    """
)


def unprivileged(path: Path) -> dict[str, object]:
    """Open ``path``, read and write one message, in a process that file modes apply to."""
    command = [sys.executable, "-c", ATTEMPT, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("running as root without setpriv: cannot test file modes")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def seeded(path: Path) -> Path:
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        add(pipeline, "kept")
    return path


def test_a_read_only_file_is_read_and_refuses_writes_in_one_line(tmp_path: Path) -> None:
    db = seeded(tmp_path / "ro.db")
    db.chmod(0o444)
    result = unprivileged(db)
    assert result["error"] == "StorageUnavailable"
    message = str(result["message"])
    assert str(db) in message and "read-only" in message and "make it writable" in message
    # SQLite made the -shm while the file was read-only, so it is read-only too;
    # once the user fixes the file's mode, it must not keep the database read-only.
    assert stat.S_IMODE(Path(f"{db}-shm").stat().st_mode) == 0o444
    db.chmod(0o600)
    assert unprivileged(db) == {"read": 1, "written": True}
    assert count(db) == 2  # the refused write left nothing; the later one landed


def test_a_read_only_folder_is_named_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    db = seeded(folder / "in-ro-folder.db")
    folder.chmod(0o555)
    try:
        existing, new = unprivileged(db), unprivileged(folder / "new.db")
    finally:
        folder.chmod(0o755)
    assert existing["error"] == "StorageUnavailable"
    assert f"its folder {folder} is read-only" in str(existing["message"])
    assert new["error"] == "StorageUnavailable"
    assert f"cannot create database {folder / 'new.db'}" in str(new["message"])
    assert "make the folder writable" in str(new["message"])
    assert count(db) == 1 and not (folder / "new.db").exists()
