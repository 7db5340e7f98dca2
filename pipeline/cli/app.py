"""The loop: the parser built from the command modules, and the one path every command
runs through (its ``before``, its pipeline if it needs one, its run, its errors)."""

from __future__ import annotations

import argparse
import difflib
import io
import logging
import os
import sys
from collections.abc import Sequence

from anchorline.bench import command as bench
from anchorline.memory.stores import masked, storage_failures

from .. import __version__
from ..errors import AnchorlineError
from . import (
    changes,
    copy,
    demo,
    doctor,
    index_optimize,
    index_worker,
    ingest,
    plugins,
    reindex,
    search,
    show,
    sweep,
)
from .common import COMMON_OPTIONS, CLIError, Parser, add_common
from .opening import check_text, open_pipeline, read_only
from .output import DEBUG_ENV, LOGGERS, log_to_stderr, say_error, stdout_closed

#: The commands, in the order ``--help`` lists them: each module adds its own.
COMMANDS = (
    demo,
    show,
    ingest,
    plugins,
    search,
    reindex,
    sweep,
    doctor,
    index_worker,
    index_optimize,
    changes,
    copy,
    bench,
)

DESCRIPTION = (
    "anchorline: the command line of Anchorline, one write path for an agent loop's messages."
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="anchorline", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"anchorline {__version__}")
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.add(sub)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a word no command takes is a usage error of that command."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _check_leading_options(parser, argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        command: argparse.ArgumentParser = args.command_parser
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _check_leading_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse an unknown option before the command's name, by its name (argparse would
    go on and take the option's value for the command)."""
    known = [o for a in parser._actions for o in a.option_strings]
    words = iter(argv)
    for word in words:
        if word == "--" or not word.startswith("-") or word == "-":
            return
        name, given, _ = word.partition("=")
        if name in known:
            if name in COMMON_OPTIONS and not given:
                next(words, None)
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        parser.error(f"unrecognized option '{name}'{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # Stored text the terminal cannot show is escaped, never a crash.
            stream.reconfigure(errors="backslashreplace")
    handler = log_to_stderr()
    try:
        status = _run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return stdout_closed()
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)


def _run(argv: Sequence[str] | None) -> int:
    args = argparse.Namespace()
    try:
        args = _parse(argv)
        before = args.command_before(args)
        check_text(args)
        with before:
            if args.command_needs is None:
                status: int = args.command_run(args, None)
                return status
            with open_pipeline(args) as pipeline:
                status = args.command_run(args, pipeline)
            return status
    except CLIError as e:
        say_error(str(e))
        return e.status
    except BrokenPipeError:
        raise  # stdout's reader left: see main()
    except (AnchorlineError, OSError) as e:
        say_error(read_only(args, e) or str(e))
        return 1
    except storage_failures() as e:
        say_error(read_only(args, e) or f"database {masked(args.db)}: {e}")
        return 1
    except KeyboardInterrupt:
        print("anchorline: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        say_error(
            f"unexpected {type(e).__name__}: {e}"
            f" (a bug: set {DEBUG_ENV}=1 for the traceback, and please report it)"
        )
        return 1
