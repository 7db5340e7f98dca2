"""``anchorline search``: the messages nearest to a query."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from rich.text import Text

from ..runner import Pipeline
from .common import Needs, add_command, positive, seconds
from .output import out, shown_text, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    search = add_command(sub, "search", run, Needs(index="existing", probe=True))
    search.add_argument("query")
    search.add_argument("--conversation", help="only this conversation")
    search.add_argument("--limit", type=positive, default=5, help="how many hits (default 5)")
    search.add_argument(
        "--wait",
        type=seconds,
        default=0.0,
        help="seconds to wait for pending indexing first (default 0: search what is indexed)",
    )


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Find the messages nearest to QUERY, among those indexed (``--wait`` lets pending
    indexing finish first)."""
    if args.wait > 0:
        pending = pipeline.indexer().settle(args.wait)
        if pending:
            logging.getLogger("anchorline.cli").warning(
                "%d message(s) still waiting to be indexed after %gs: searching what is indexed",
                pending,
                args.wait,
            )
    hits = pipeline.search(args.query, conversation_id=args.conversation, limit=args.limit)
    if not hits:
        out.print("no matches")
        return 0
    for hit in hits:
        m = hit.message
        where = f" {visible(m.conversation_id)} {visible(m.role)} {visible(m.id)}"
        out.print(Text.assemble((f"{hit.score:.3f}", "bold"), where))
        out.print(Text("\n".join(f"      {ln}" for ln in shown_text(m).split("\n"))))
    return 0
