"""What every command shares: usage errors, the common options and their defaults,
argument types, what a command needs opened, and how a command is added."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias

import attrs

from .indexes import DEFAULT_EMBEDDER_URL, EMBEDDER_ENV, EMBEDDER_FORMS, EMBEDDER_URL_ENV

DB_ENV = "ANCHORLINE_DB"
DEFAULT_DB = "anchorline.db"
INDEX_ENV = "ANCHORLINE_INDEX"
DEFAULT_INDEX = "local"


class CLIError(Exception):
    """A problem to report on one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """Reports a usage error as a :class:`CLIError` that points to its command's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The command's own parser, for what only the top parser finds wrong.
        self.set_defaults(command_parser=self)

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see {self.prog} --help)", status=2)


if TYPE_CHECKING:
    #: Where a command module adds its command.
    Subcommands: TypeAlias = argparse._SubParsersAction[Parser]


#: How a command uses the index: not at all; if it is there; it must be there;
#: it must be configured (and is created if need be); as configured.
IndexUse = Literal["unused", "if-present", "existing", "required", "any"]


@attrs.frozen
class Needs:
    """What a command needs before it opens the pipeline. Only ``creates``
    commands may create the database; the others refuse a missing one, so a
    command that only reads never leaves a file behind."""

    creates: bool = False
    index: IndexUse = "any"
    #: With no database file there, open an empty one in memory (``plugins``).
    missing_ok: bool = False
    #: The command waits on the index: a server that refuses or does not resolve
    #: fails it at once. (Writes do not wait, and an index worker waits outages out.)
    probe: bool = False


#: What a command does before its pipeline opens (see :func:`add_command`).
Before = Callable[[argparse.Namespace], contextlib.AbstractContextManager[object]]


def nothing_before(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


def add_command(
    sub: Subcommands,
    name: str,
    run: Callable[..., int],
    needs: Needs | None,
    *,
    before: Before = nothing_before,
    common: bool = True,
    **kwargs: Any,
) -> Parser:
    """Add command ``name``, whose help is ``run``'s docstring, to ``sub``.

    ``run(args, pipeline)`` is given the pipeline ``needs`` describes, or ``None`` if
    ``needs`` is ``None``. ``before(args)`` is called first, before the arguments' text
    is checked (it may set some, as ``changes DB`` sets ``--db``); the context it
    returns is entered before the pipeline opens (``ingest FILE`` opens its file
    there) and left after the command. ``common``: the command takes ``--db``,
    ``--index`` and ``--embedder``.
    """
    kwargs.setdefault("help", summary(run))
    parser = sub.add_parser(name, description=doc(run), allow_abbrev=False, **kwargs)
    if common:
        add_common(parser, top=False)
    parser.set_defaults(command_run=run, command_needs=needs, command_before=before)
    return parser


def doc(fn: Callable[..., Any]) -> str:
    """A command's docstring as its help shows it (without reST's double backticks)."""
    return (fn.__doc__ or "").replace("``", "")


def summary(fn: Callable[..., Any]) -> str:
    """The docstring's first sentence, however many lines it runs over."""
    return " ".join(doc(fn).split("\n\n")[0].split()).split(". ")[0]


#: The options every command that opens a database takes, before or after its name.
COMMON_OPTIONS = ("--db", "--index", "--embedder")


def add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--db``, ``--index`` and ``--embedder``: on the top parser with their defaults, on
    a command's parser without (so that one given before the command is kept)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--db",
        default=default(os.environ.get(DB_ENV) or DEFAULT_DB),
        help=f"database file or postgresql:// URL (default: ${DB_ENV} or ./{DEFAULT_DB})",
    )
    parser.add_argument(
        "--index",
        default=default(os.environ.get(INDEX_ENV) or None),
        help="vector index: local (a folder next to the database), :memory:, a Qdrant URL,"
        f" or none (default: ${INDEX_ENV}, else {DEFAULT_INDEX} for a database file and none"
        " for a database server)",
    )
    parser.add_argument(
        "--embedder",
        default=default(None),
        help=f"the index's embedder: {EMBEDDER_FORMS}, at ${EMBEDDER_URL_ENV} (default"
        f" {DEFAULT_EMBEDDER_URL}) with the key in $OPENAI_API_KEY"
        f" (default: ${EMBEDDER_ENV}, else the one the index folder was built with, else"
        " hashing)",
    )


_MAX_SECONDS = 100 * 365 * 24 * 3600  # a century: more is a typo, and overflows a timestamp


def seconds(value: str) -> float:
    """An argparse type: a number of seconds from zero to a century."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number <= _MAX_SECONDS:  # NaN fails both
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0 to {_MAX_SECONDS}, got {value!r}"
        )
    return number


def positive(value: str) -> int:
    """An argparse type: a whole number, one or more."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return number


def is_file(db: str) -> bool:
    """Whether ``--db`` names a file (not ``:memory:``, a ``file:`` URI or a server URL)."""
    return db != ":memory:" and "://" not in db and not db.startswith("file:")


def is_folder(location: str) -> bool:
    """Whether an index location is a folder (not ``:memory:`` or a server URL)."""
    return location != ":memory:" and "://" not in location
