"""``anchorline copy``: every conversation from one store to another."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from rich.text import Text

from anchorline.memory.stores import check_location

from .common import DEFAULT_INDEX, CLIError, add_command, is_file
from .indexes import index_location
from .output import out, progress, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    copy = add_command(
        sub, "copy", run, None, common=False, help="copy every conversation to another store"
    )
    copy.add_argument("source", help="a database file or a postgresql:// URL")
    copy.add_argument("target", help="a database file or a postgresql:// URL (created if new)")


def run(args: argparse.Namespace, pipeline: None) -> int:
    """Copy every conversation from SOURCE to TARGET (SQLite or PostgreSQL, either way).

    Resumable and idempotent: run it again after an interruption to finish.
    """
    from anchorline.memory.copying import copy_store
    from anchorline.memory.stores import open_store

    check_location(args.source)
    check_location(args.target)
    if is_file(args.source) and not os.path.exists(args.source):
        raise CLIError(f"no database at {os.path.abspath(args.source)}: nothing to copy")
    if is_file(args.source) and is_file(args.target) and _same_file(args.source, args.target):
        raise CLIError(f"copy: {args.target} is the source itself; name another target")
    target_index = _index_location_of(args.target) if is_file(args.target) else None
    source = open_store(args.source)
    try:
        target = open_store(args.target)
        try:
            if "://" in args.source and source.location == target.location:
                raise CLIError(f"copy: {target.location} is the source itself; name another"
                               " target")  # fmt: skip
            with progress(out) as shown:
                task = shown.add_task("copying", total=None)
                report = copy_store(
                    source, target, progress=lambda done: shown.update(task, completed=done)
                )
        finally:
            target.close()
    finally:
        source.close()
    out.print(
        Text(
            visible(
                f"copied {report.read} message(s) from {source.location} to {target.location}:"
                f" {report.written} written, {report.unchanged} already there;"
                f" {report.conversations} conversation(s) brought up to date"
            )
        )
    )
    if target_index is not None and not os.path.exists(target_index):
        hint = f"build it with 'anchorline --db {args.target} reindex'"
        out.print(Text(visible(f"{args.target} has no index yet, so search does not find these:"
                               f" {hint}")))  # fmt: skip
    return 0


def _same_file(a: str, b: str) -> bool:
    """Whether two database paths name one file (through links, or different spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _index_location_of(db: str) -> str:
    return index_location(DEFAULT_INDEX, db)
