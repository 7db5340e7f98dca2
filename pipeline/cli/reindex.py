"""``anchorline reindex``: the index rebuilt from the database."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.text import Text

from anchorline.memory.stores import masked_text

from ..runner import Pipeline
from .common import Needs, add_command
from .output import out, progress, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    add_command(sub, "reindex", run, Needs(index="required", probe=True))


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Rebuild the index from the database (resumes if interrupted)."""
    indexer = pipeline.indexer()
    with progress(out, transient=False) as shown:
        task = shown.add_task("reindexing", total=None)

        def report(done: int, total: int) -> None:
            shown.update(task, completed=done, total=total)

        total = indexer.reindex(report)
    out.print(Text(masked_text(visible(f"reindexed {total} message(s) into {indexer.index!r}"))))
    return 0
