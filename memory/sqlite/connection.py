"""Opening the SQLite file through apsw with the settings Anchorline relies on."""

from __future__ import annotations

import os
import stat

import apsw

from anchorline.errors import StorageUnavailable
from anchorline.memory.durability import resolve_durability
from anchorline.memory.retry import RetryPolicy

from .errors import named, storage_error
from .schema import ensure_schema
from .transaction import call

_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI

#: Each durability and the ``PRAGMA synchronous`` it runs the WAL with.
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
#: New database files are private to their owner; SQLite gives the -wal and
#: -shm files the database's mode.
FILE_MODE = 0o600


def _unavailable(text: str, cause: BaseException | None = None) -> StorageUnavailable:
    return StorageUnavailable(text, attempts=1, last_cause=cause)


def _create_private(path: str) -> None:
    """Create the database file with :data:`FILE_MODE` if it does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    except FileNotFoundError as e:
        folder = os.path.dirname(os.path.abspath(path))
        raise _unavailable(
            f"cannot open database {path}: its folder {folder} does not exist: create it first", e
        ) from None
    except OSError as e:
        folder = os.path.dirname(os.path.abspath(path))
        raise _unavailable(
            f"cannot create database {path} in folder {folder}: {e.strerror}: make the folder"
            " writable by this user, or choose another path",
            e,
        ) from None
    os.close(fd)


def _unstick_sidecars(path: str) -> None:
    """Give a writable database's -wal and -shm files its mode back, if they are ours.

    SQLite makes them with the database's mode: made while the database was
    read-only, they would keep it read-only after its mode is fixed.
    """
    try:
        if not os.access(path, os.W_OK):
            return
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    for sidecar in (f"{path}-wal", f"{path}-shm"):
        try:
            if not os.access(sidecar, os.W_OK) and os.stat(sidecar).st_uid == os.geteuid():
                os.chmod(sidecar, mode)
        except OSError:
            continue  # gone, or not ours: SQLite reports it, and the error names it


def connect(
    path: str,
    policy: RetryPolicy | None = None,
    *,
    vfs: str | None = None,
    durability: str = "normal",
) -> apsw.Connection:
    """Open ``path`` (or ``":memory:"``), check or create the schema, then set
    WAL, ``synchronous`` for ``durability`` (``"normal"``: NORMAL, ``"full"``:
    FULL) and foreign keys.

    A new file is created private (mode 0600). apsw leaves ``busy_timeout`` at
    0 (fail at once when another connection writes), so it is always set here,
    from the retry ``policy``. Creating the schema and switching to WAL take
    the write lock, so several processes opening one new file at once wait for
    each other under the policy too. A failure is a :class:`StorageUnavailable`
    (or, for a file that is not Anchorline's, ``IncompatibleStore``).
    """
    policy = policy or RetryPolicy()
    synchronous = SYNCHRONOUS[resolve_durability(durability)]
    path = os.fspath(path)
    where = named(path)
    on_disk = path != ":memory:" and not path.startswith("file:")
    if on_disk and vfs is None:
        _create_private(path)
        _unstick_sidecars(path)
    try:
        conn = (
            apsw.Connection(path, flags=_FLAGS, vfs=vfs)
            if vfs
            else apsw.Connection(path, flags=_FLAGS)
        )
    except apsw.Error as e:
        raise _unavailable(
            f"cannot open {where}: {e}: check the path and that this user may read and write it", e
        ) from None
    try:
        conn.set_busy_timeout(policy.busy_timeout_ms)
        call(policy, conn, lambda c: ensure_schema(c, where))
        if path != ":memory:":
            call(policy, conn, lambda c: c.execute("PRAGMA journal_mode = WAL").fetchall())
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows and freed pages are overwritten with zeros, so a forgotten
        # conversation leaves no text in the file once the WAL is checkpointed.
        conn.execute("PRAGMA secure_delete = ON")
        # A batch writes inside a savepoint, whose undo pages SQLite keeps in a temp
        # file by default: in memory, persist_many's rows cost half as much.
        conn.execute("PRAGMA temp_store = MEMORY")
    except apsw.Error as e:
        conn.close()
        raise storage_error(e, path) from e
    except BaseException:
        conn.close()
        raise
    return conn
