"""Opening the pipeline a command needs (its :class:`~.common.Needs`), refusing what
cannot work before anything is created, and the words for a read-only folder."""

from __future__ import annotations

import argparse
import os

from anchorline.memory.stores import check_location, masked

from ..errors import IndexUnavailable
from ..plugin_manager import autoload_enabled, check_entrypoints
from ..runner import Pipeline
from ..settings import parse_index
from .common import (
    DB_ENV,
    DEFAULT_DB,
    DEFAULT_INDEX,
    INDEX_ENV,
    CLIError,
    Needs,
    is_file,
    is_folder,
)
from .indexes import (
    DEFAULT_EMBEDDER_URL,
    EMBEDDER_ENV,
    EMBEDDER_URL_ENV,
    index_location,
    is_server,
    parse_embedder,
    remembered_embedder,
)

#: The arguments that reach the store or the index, by the name to show.
_STORED_ARGUMENTS = {
    "db": "--db",
    "index": "--index",
    "conversation_id": "conversation_id",
    "conversation": "--conversation",
    "query": "query",
}


def check_text(args: argparse.Namespace) -> None:
    # Bytes of the command line that are not UTF-8 arrive as lone surrogates,
    # which no store can hold. (A file to read may have any name.)
    for dest, shown in _STORED_ARGUMENTS.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raw = value.encode(errors="surrogateescape").decode(errors="backslashreplace")
                raise CLIError(f"{shown}: '{raw}' is not valid UTF-8", status=2) from None


def args_index_location(args: argparse.Namespace) -> str:
    return index_location(args.index, args.db)


def open_pipeline(args: argparse.Namespace) -> Pipeline:
    needs: Needs = args.command_needs
    db: str = args.db
    args.index_given = args.index is not None
    if args.index is None:
        args.index = DEFAULT_INDEX if "://" not in db else "none"
    index: str | None = parse_index(args.index)  # a mistyped location is the first thing to say
    embedder_kind, _ = parse_embedder(args.embedder or os.environ.get(EMBEDDER_ENV) or "hashing")
    if not db:
        raise CLIError(f"--db: empty; name a database file (the default is ./{DEFAULT_DB})")
    check_location(db)  # a mistyped URL, before it is taken for a file name
    if is_file(db) and os.path.isdir(db):
        raise CLIError(f"--db: {db} is a folder, not a database file")
    args.no_database = needs.missing_ok and is_file(db) and not os.path.exists(db)
    if args.no_database:
        db, index = ":memory:", None
    elif not needs.creates and is_file(db):
        _refuse_missing(db)
    if index is None and needs.index in ("existing", "required"):
        if "://" in db and not (args.index_given or os.environ.get(INDEX_ENV)):
            raise CLIError(
                f"no index: a database server has none by default; name the Qdrant server"
                f" with --index URL (or ${INDEX_ENV})"
            )
        raise CLIError(f"no index: drop --index none (or unset {INDEX_ENV}=none)")
    if index is not None and needs.index in ("if-present", "existing"):
        location = args_index_location(args)
        if is_folder(location) and not os.path.exists(location):
            if needs.index == "existing":
                raise CLIError(
                    f"no index at {os.path.abspath(location)}: build it with 'anchorline reindex'"
                )
            index = None
    if needs.index == "unused":
        index = None
    if "://" in db:  # a server: looked for (one attempt) once the rest is right
        _refuse_missing(db, creates=needs.creates)
    embedder = args.embedder if index is not None else None
    if index is not None and embedder is None and not os.environ.get(EMBEDDER_ENV):
        location = args_index_location(args)
        if is_folder(location):  # the embedder that built it, unless told another
            embedder = remembered_embedder(location)
            if embedder is not None:
                embedder_kind, _ = parse_embedder(embedder)
    if index is not None and needs.probe:
        if is_server(index) and (error := _unreachable(index, 6333)) is not None:
            # server_error's words, without importing qdrant_client (a second) to say them.
            raise IndexUnavailable(
                f"{args.command}: could not reach the Qdrant server at {masked(index)}"
                f" ({error}); check that it is running and that the URL is right"
            )
        url = os.environ.get(EMBEDDER_URL_ENV) or DEFAULT_EMBEDDER_URL
        if embedder_kind == "openai" and (error := _unreachable(url, None)) is not None:
            raise CLIError(f"--embedder: the embedding server at {masked(url)} cannot be"
                           f" reached ({error}): check that it runs there, the URL's host"
                           " and port, and the network")  # fmt: skip
    if autoload_enabled():
        check_entrypoints()  # a broken one fails the command before a database is created
    return Pipeline.open(db, index=index, embedder=embedder)


def _unreachable(url: str, port: int | None) -> OSError | None:
    """Why the server at ``url`` cannot be reached, if waiting will not mend it: its host
    name does not resolve, it refuses the connection, or there is no network; else
    ``None`` (no answer yet is left to the retries). ``port``: the default when ``url``
    has none (else by its scheme)."""
    import errno
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # said where the URL is parsed
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=2).close()
    except (socket.gaierror, ConnectionRefusedError) as e:
        return e
    except OSError as e:
        return e if e.errno == errno.ENETUNREACH else None
    return None


def _refuse_missing(db: str, *, creates: bool = False) -> None:
    """Raise if no store is at ``db`` yet (a command that only reads creates none), or if
    it cannot be reached: one attempt, so that what waiting cannot mend is said at once."""
    from anchorline.memory.stores import missing

    why = missing(db)
    if why is not None and not creates:
        how = "'anchorline ingest FILE'" + (" (or 'anchorline demo')" if is_file(db) else "")
        raise CLIError(f"{why}: create one with {how}, or name another with --db or ${DB_ENV}")


def read_only(args: argparse.Namespace, error: BaseException) -> str | None:
    """What to say when ``error`` comes of a database file (or its index folder) on a
    read-only folder: SQLite creates its -wal and -shm files beside the database, even
    to read it, and ``index optimize`` rewrites the index folder."""
    import errno

    db = getattr(args, "database", None) or getattr(args, "db", None)
    if not isinstance(db, str) or not is_file(db) or not os.path.exists(db):
        return None
    cause: BaseException | None = error
    while cause is not None:
        text = str(cause)
        if (isinstance(cause, OSError) and cause.errno == errno.EROFS) or any(
            words in text for words in ("unable to open database file", "Read-only file system")
        ):
            break
        cause = cause.__cause__ or getattr(cause, "last_cause", None)
    folder = os.path.dirname(os.path.abspath(db))
    if cause is None or writable(folder):
        return None
    if getattr(args, "command", None) == "index":
        return (
            f"index optimize: the index of {db} is in a read-only folder ({folder}), and"
            " optimizing rewrites it: make the folder writable, then run it again"
        )
    return (
        f"database {db}: its folder {folder} is read-only, and SQLite must create its -wal"
        " and -shm files beside the database even to read it: make the folder writable, or"
        " copy the database to a writable folder ('anchorline copy DB NEW.db') and use that"
    )


def writable(folder: str) -> bool:
    """Whether ``folder`` takes new files: not on a read-only mount, and (for a user
    other than root, whom permissions do not stop) writable by its permissions."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return True
    return os.access(folder, os.W_OK)
