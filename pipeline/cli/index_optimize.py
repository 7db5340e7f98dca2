"""``anchorline index optimize``: the HNSW graph of an index folder built."""

from __future__ import annotations

import argparse
import multiprocessing
import os
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from anchorline.memory.stores import check_location

from ..errors import IndexBusy, IndexUnavailable
from .common import DEFAULT_INDEX, CLIError, Parser, add_command, is_folder
from .indexes import index_location, optimize_in_child, read_meta
from .output import out, progress, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    index = sub.add_parser("index", help="work on the vector index", allow_abbrev=False)
    commands = index.add_subparsers(dest="index_command", required=True, parser_class=Parser)
    optimize = add_command(commands, "optimize", run, None)
    optimize.add_argument("database", nargs="?", metavar="DB", help="default: --db")


def run(args: argparse.Namespace, pipeline: None) -> int:
    """Build the HNSW graph of the index folder, for faster approximate search (search is
    exact until then). Other processes find the folder busy while it runs."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    db = args.database or args.db
    check_location(db)
    if args.index is None and "://" in db:
        raise CLIError("index optimize: a database server has no index folder; a Qdrant server"
                       " optimizes its collections itself")  # fmt: skip
    if args.index == "none":
        raise CLIError("index optimize: --index none: there is no index to optimize")
    location = index_location(args.index or DEFAULT_INDEX, db)
    if not is_folder(location):
        raise CLIError(f"index optimize: {location} is not an index folder; a Qdrant server"
                       " optimizes its collections itself")  # fmt: skip
    if read_meta(location) is None:
        raise CLIError(f"no index at {os.path.abspath(location)}: build it with"
                       " 'anchorline reindex'")  # fmt: skip
    # In a child process: Qdrant Edge holds the GIL while it optimizes.
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=optimize_in_child, args=(location, send), daemon=True)
    with progress(
        Console(stderr=True, highlight=False),
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    ) as shown:
        shown.add_task(visible(f"building the HNSW graph of {location}"))
        child.start()
        send.close()
        try:
            answer = receive.recv()
        except EOFError:
            child.join()
            answer = ("IndexUnavailable", f"index optimize: the process optimizing {location}"
                      f" died (exit status {child.exitcode})")  # fmt: skip
        child.join()
    if isinstance(answer, tuple):
        kind, message = answer
        raise (IndexBusy if kind == "IndexBusy" else IndexUnavailable)(message)
    done = f"optimized {location}" if answer else f"{location}: nothing to optimize"
    out.print(Text(visible(done if answer else f"{done} (done already, or too few points to"
                           " need a graph)")))  # fmt: skip
    return 0
