"""SQLite's errors as Anchorline reports them: which are worth a retry, and one line for
the rest."""

from __future__ import annotations

import os
from typing import NoReturn

import apsw

from anchorline.errors import StorageUnavailable

#: Error classes worth another attempt: the database is busy or locked, or the
#: disk had a transient I/O error. Anything else (full disk, corruption,
#: constraint violations) would fail the same way again.
RETRYABLE: tuple[type[BaseException], ...] = (apsw.BusyError, apsw.LockedError, apsw.IOError)


#: SQLite's errors that mean the database or its disk failed, not the caller: the
#: store reports them as ``StorageUnavailable``, and a caller that meets one raw
#: treats it the same way.
FAILURES: tuple[type[BaseException], ...] = (
    apsw.FullError,
    apsw.ReadOnlyError,
    apsw.IOError,
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.CantOpenError,
    apsw.PermissionsError,
    apsw.BusyError,
    apsw.LockedError,
)


def filename(conn: apsw.Connection) -> str | None:
    """The file ``conn`` has open: ``""`` for an in-memory database, ``None`` once closed."""
    try:
        name: str = conn.filename
    except apsw.Error:
        return None
    return name


def named(path: str | None) -> str:
    """A database as error messages name it."""
    if path is None:
        return "the database"
    return "the in-memory database" if path in ("", ":memory:") else f"database {path}"


def _read_only_part(path: str) -> str:
    """Which of the file, its -wal and -shm, and its folder this process may not write."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file is read-only"
    for sidecar in (f"{path}-wal", f"{path}-shm"):
        if os.path.exists(sidecar) and not os.access(sidecar, os.W_OK):
            return f"{sidecar} is read-only"
    if not os.access(folder, os.W_OK):
        return f"its folder {folder} is read-only (SQLite creates the -wal and -shm files there)"
    return "its file system is read-only"


def storage_error(error: apsw.Error, path: str | None) -> StorageUnavailable:
    """``error`` on the database at ``path`` as one line a caller can act on: what
    failed, on which file, and what to do."""
    db = named(path)
    if isinstance(error, apsw.FullError):
        text = f"disk full: cannot write {db}: free space on its disk, then retry"
    elif isinstance(error, apsw.ReadOnlyError | apsw.PermissionsError):
        reason = _read_only_part(path) if path and path != ":memory:" else "read-only"
        text = (
            f"cannot write {db}: {reason}: make it writable by this user, then reopen the pipeline"
        )
    elif isinstance(error, apsw.BusyError | apsw.LockedError):
        text = (
            f"{db} stayed locked by another connection: retry later, or give the"
            " RetryPolicy a longer deadline"
        )
    elif isinstance(error, apsw.IOError):
        text = f"disk I/O error on {db} ({error}): check the disk and its file system, then retry"
    elif isinstance(error, apsw.CorruptError):
        text = f"{db} is corrupt ({error}): restore it from a backup"
    else:
        text = f"storage error on {db}: {error}"
    return StorageUnavailable(text, attempts=1, last_cause=error)


def explain(error: BaseException, conn: apsw.Connection) -> str:
    if isinstance(error, apsw.Error):
        return str(storage_error(error, filename(conn)))
    return str(error)


def reraise(error: BaseException, conn: apsw.Connection) -> NoReturn:
    """Raise ``error``, as :class:`StorageUnavailable` if it came from apsw."""
    if isinstance(error, apsw.Error):
        raise storage_error(error, filename(conn)) from error
    raise error
