"""What every command shares: the console, escaping, usage errors, the common options,
what a command needs opened, and how an error is said (one line, an exit status)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anchorline.memory.stores import masked_text

from ..results import Message
from .indexes import DEFAULT_EMBEDDER_URL, EMBEDDER_ENV, EMBEDDER_FORMS, EMBEDDER_URL_ENV

DB_ENV = "ANCHORLINE_DB"
DEFAULT_DB = "anchorline.db"
INDEX_ENV = "ANCHORLINE_INDEX"
DEFAULT_INDEX = "local"
DEBUG_ENV = "ANCHORLINE_DEBUG"


# Text from users, packages and errors goes to rich as Text, never parsed as
# markup (rich.markup.escape would show a trailing backslash twice), ":name:" is
# not turned into an emoji, and a long line is not broken (soft_wrap). Its control
# characters are shown as escapes first (visible()): rich passes them through.
class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout's reader left: ended in :func:`anchorline.cli.main`, as for any other
        write."""
        self.quiet = True
        raise BrokenPipeError


out = _Console(highlight=False, emoji=False, soft_wrap=True)

# What a terminal would act on rather than show: C0 and C1 controls, DEL, and
# the characters that reorder or break lines (bidi overrides, U+2028/U+2029).
_OTHER_CONTROLS = "\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x0a{_OTHER_CONTROLS}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08{_OTHER_CONTROLS}]")


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with each control character written as its escape (ESC as ``\\x1b``),
    so that printing it shows it and the terminal does nothing; ``lines`` keeps
    newlines and tabs."""
    pattern = _CONTROL_BUT_LINES if lines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(text: str) -> str:
    """``text`` on one line, its control characters escaped."""
    return visible(" ".join(text.splitlines()))


class CLIError(Exception):
    """A problem to report on one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def say_error(message: str) -> None:
    """An error as the CLI says it: one line on stderr, passwords masked."""
    print(f"anchorline: error: {masked_text(one_line(message))}", file=sys.stderr)


def stdout_closed() -> int:
    """The reader of stdout went away (``anchorline changes | head -1``): stop quietly,
    with the status of a process that SIGPIPE ended, as other commands do."""
    # Python flushes stdout again at exit; let that write go nowhere.
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13


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


def shown_text(message: Message) -> str:
    """The content as ``show`` prints it: the text, each block on its own line (a block
    without text by its type, where ``Message.text`` leaves it out), its control
    characters escaped."""
    if isinstance(message.content, str):
        text = message.content or "(empty)"
    else:
        parts = [b.get("text", f"[{b.get('type')}]") for b in message.content]
        text = "\n".join(str(p) for p in parts) or "(empty)"
    return visible(text, lines=True)


def print_conversation(messages: Sequence[Message], *, table: bool = True) -> None:
    """The messages as a table, or (``table=False``, for a pipe or a file) as plain
    text: a line ``role status id`` and the content below it, indented."""
    if not table:
        for m in messages:
            out.print(Text(f"{visible(m.role)} {visible(m.status)} {visible(m.id)}"))
            out.print(Text("\n".join(f"  {ln}" for ln in shown_text(m).split("\n"))))
        return
    grid = Table(show_lines=False, expand=False)
    grid.add_column("role")
    grid.add_column("status")
    grid.add_column("id", no_wrap=True)
    grid.add_column("content", overflow="fold")
    for m in messages:
        grid.add_row(Text(visible(m.role)), Text(visible(m.status)), Text(visible(m.id)),
                     Text(shown_text(m)))  # fmt: skip
    out.print(grid, soft_wrap=False)


class _NoProgress:
    """Progress for a pipe or a file: nothing shown (rich would leave a blank line)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(self, task: int, **fields: Any) -> None:
        pass


def progress(console: Console, *columns: Any, transient: bool = True) -> Any:
    """A rich ``Progress`` on ``console`` if it is a terminal; else one that shows nothing."""
    from rich.progress import Progress

    if not console.is_terminal:
        return _NoProgress()
    return Progress(*columns, console=console, transient=transient)


class _OneLine(logging.Formatter):
    """A log record as one line: the exception's type and text, not its traceback.

    Each is a warning: the library logs what the command went on after (an
    observer that failed, an index that is down). What fails the command is
    reported once, as its error, with a non-zero exit status.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.split(".")[0] != "anchorline":  # the driver's: say whose it is
            message = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", message).rstrip(": ")
            message = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f": {type(error).__name__}: {error}"
        return f"anchorline: warning: {masked_text(one_line(message))}"


class _OncePerDriverMessage(logging.Filter):
    """Lets a warning of the database driver's through once: its pool says "discarding
    closed connection" for each connection a restarted server dropped, which the store
    replaces by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "anchorline":
            return True
        # Without the object's address: "<PooledConnection [BAD] at 0x7f...>".
        said = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", record.getMessage())
        if said in self.seen:
            return False
        self.seen.add(said)
        return True


#: The loggers whose warnings a command shows: the library's, and psycopg's (its
#: pool logs each connection it loses, on several lines).
LOGGERS = ("anchorline", "psycopg")


def log_to_stderr() -> logging.Handler:
    """What the library logs (an observer that failed, an index that is down) goes to
    stderr one line each; with $ANCHORLINE_DEBUG set, with its traceback."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(DEBUG_ENV, "") in ("", "0"):
        handler.setFormatter(_OneLine())
        handler.addFilter(_OncePerDriverMessage())
    handler.setLevel(logging.WARNING)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return handler
