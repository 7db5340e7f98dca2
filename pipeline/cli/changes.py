"""``anchorline changes``: read the change feed, follow it, or trim it.

    anchorline changes [DB] [--after N] [--limit N] [--follow]
    anchorline changes trim [DB] --before CURSOR

Each change is printed as one JSON object per line (ids only, no text), so a
script can read on from the last ``cursor`` it printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING

import attrs

from ..changefeed import LARGEST
from ..errors import CursorExpired
from ..results import Change
from ..runner import Pipeline
from .common import CLIError, Needs, add_command, positive

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    parser = add_command(sub, "changes", run, Needs(index="unused"), before=take_database)
    parser.add_argument(
        "words",
        nargs="*",
        metavar="[trim] DB",
        help="the database (default: --db); 'trim DB' drops old changes",
    )
    parser.add_argument(
        "--after",
        type=_cursor,
        metavar="N",
        help="changes after cursor N (default: from the oldest the feed keeps)",
    )
    parser.add_argument(
        "--limit", type=positive, default=100, metavar="N", help="at most N (default 100)"
    )
    parser.add_argument(
        "--follow", action="store_true", help="then print changes as they commit, until ^C"
    )
    parser.add_argument(
        "--before", type=_cursor, metavar="CURSOR", help="with trim: drop changes below CURSOR"
    )


def _cursor(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= LARGEST:
        raise argparse.ArgumentTypeError(f"must be a cursor (a whole number >= 0), got {value!r}")
    return number


def take_database(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """Take the database from the positional words (before the pipeline opens)."""
    words: list[str] = args.words
    args.trim = bool(words) and words[0] == "trim"
    if args.trim:
        words = words[1:]
        if args.before is None:
            raise CLIError("changes trim: --before CURSOR is required", status=2)
    elif args.before is not None:
        raise CLIError("--before: only with 'changes trim DB'", status=2)
    if len(words) > 1:
        raise CLIError(f"changes: one database, got {len(words)}: {' '.join(words)}", status=2)
    if words:
        args.db = words[0]
    return contextlib.nullcontext()


def _print(change: Change) -> None:
    sys.stdout.write(json.dumps(attrs.asdict(change), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Print the change feed (one JSON object per line), follow it, or trim it."""
    if args.trim:
        removed = pipeline.trim_changes(args.before)
        print(f"removed {removed} changes below cursor {args.before}")
        return 0
    cursor = args.after
    if cursor is None:  # from the oldest change kept
        try:
            pipeline.changes(0, 1)
            cursor = 0
        except CursorExpired as e:
            cursor = e.oldest - 1
    for change in pipeline.changes(cursor, args.limit):
        _print(change)
        cursor = change.cursor
    if args.follow:
        for change in pipeline.follow(after=cursor):
            _print(change)
    return 0
