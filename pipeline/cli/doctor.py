"""``anchorline doctor``: the index checked against the messages."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from anchorline.memory.stores import masked_text

from ..runner import Pipeline
from .common import Needs, add_command
from .output import one_line, out

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    add_command(sub, "doctor", run, Needs(index="existing", probe=True))


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Check the index against the messages; exit 1 if they disagree."""
    report = pipeline.indexer().doctor()
    table = Table(title="index consistency", show_header=False)
    table.add_row("indexable messages", str(report.indexable))
    table.add_row("points in the index", str(report.points))
    table.add_row("pending items", str(report.pending))
    table.add_row("failing items", str(report.failing))
    table.add_row("missing points", str(len(report.missing)))
    table.add_row("orphan points", str(len(report.orphans)))
    table.add_row("last error", Text(masked_text(one_line(report.last_error or "-"))))
    out.print(table)
    if report.clean:
        out.print("[green]clean[/]")
        return 0
    out.print("[yellow]not clean[/]: run anchorline reindex, or let pending items drain")
    return 1
