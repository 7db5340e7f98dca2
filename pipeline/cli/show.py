"""``anchorline show``: one conversation's messages."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

import attrs

from ..runner import Pipeline
from .common import CLIError, Needs, add_command
from .output import print_conversation

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    show = add_command(sub, "show", run, Needs(index="unused"))
    show.add_argument("conversation_id")
    show.add_argument("--json", action="store_true", help="one JSON object per message")


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Print one conversation's messages: a table on a terminal, else plain text; with
    --json, one JSON object per message and line."""
    messages = pipeline.messages(args.conversation_id)
    if not messages:
        raise CLIError(f"no messages in conversation {args.conversation_id!r}")
    if args.json:
        for m in messages:  # json.dumps writes every control character as an escape
            sys.stdout.write(json.dumps(attrs.asdict(m), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
    print_conversation(messages, table=sys.stdout.isatty())
    return 0
