"""Opening the SQLite file through apsw with the settings Anchorline relies on."""

from __future__ import annotations

import os

import apsw

from pipeline.errors import StorageUnavailable

from .schema import ensure_schema

_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI


def connect(path: str, *, busy_timeout_ms: int, vfs: str | None = None) -> apsw.Connection:
    """Open ``path`` (or ``":memory:"``), check or create the schema, then set
    WAL, ``synchronous=NORMAL`` and foreign keys.

    apsw leaves ``busy_timeout`` at 0 (fail at once when another connection
    writes), so it is always set here.
    """
    where = "in-memory database" if path == ":memory:" else os.fspath(path)
    try:
        conn = (
            apsw.Connection(path, flags=_FLAGS, vfs=vfs)
            if vfs
            else apsw.Connection(path, flags=_FLAGS)
        )
    except apsw.CantOpenError as e:
        raise StorageUnavailable(
            f"cannot open database {where}: {e} (does its folder exist?)", attempts=1, last_cause=e
        ) from None
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        ensure_schema(conn, where)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn
