"""What the commands print, and how: the console, control characters shown as escapes,
messages as ``show`` and ``search`` print them, progress, an error as one line, and what
the library logs, one line each on stderr."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anchorline.memory.stores import masked_text

from ..results import Message

#: Set (to anything but 0), errors and warnings come with their traceback.
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
