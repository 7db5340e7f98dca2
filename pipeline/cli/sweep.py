"""``anchorline sweep``: placeholders left by dead writers recovered."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.text import Text

from ..runner import Pipeline
from .common import Needs, add_command, seconds
from .output import out, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    sweep = add_command(sub, "sweep", run, Needs(index="if-present"))
    sweep.add_argument(
        "--older-than",
        type=seconds,
        default=60.0,
        metavar="S",
        help="only placeholders not written for S seconds (default 60)",
    )


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Recover placeholders left by dead writers: delete empty ones, finalize partial ones."""
    report = pipeline.sweep(older_than=args.older_than)
    for message_id in report.deleted:
        out.print(Text(f"deleted   {visible(message_id)} (empty placeholder)"))
    for message_id in report.finalized:
        out.print(Text(f"finalized {visible(message_id)} (partial content, marked interrupted)"))
    for message_id in report.skipped:
        out.print(Text(f"skipped   {visible(message_id)} (written while sweeping)"))
    out.print(
        f"swept {report.total}: {len(report.deleted)} deleted,"
        f" {len(report.finalized)} finalized, {len(report.skipped)} skipped"
    )
    return 0
