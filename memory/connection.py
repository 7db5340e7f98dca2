"""Opening the SQLite file through apsw with the settings Anchorline relies on."""

from __future__ import annotations

import os

import apsw
from anchorline.errors import StorageUnavailable

from .retry import RetryPolicy
from .schema import ensure_schema

_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI


def connect(
    path: str, policy: RetryPolicy | None = None, *, vfs: str | None = None
) -> apsw.Connection:
    """Open ``path`` (or ``":memory:"``), check or create the schema, then set
    WAL, ``synchronous=NORMAL`` and foreign keys.

    apsw leaves ``busy_timeout`` at 0 (fail at once when another connection
    writes), so it is always set here, from the retry ``policy``. Creating the
    schema and switching to WAL take the write lock, so several processes
    opening one new file at once wait for each other under the policy too.
    """
    policy = policy or RetryPolicy()
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
        conn.set_busy_timeout(policy.busy_timeout_ms)
        policy.call(conn, lambda c: ensure_schema(c, where))
        if path != ":memory:":
            policy.call(conn, lambda c: c.execute("PRAGMA journal_mode = WAL").fetchall())
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn
