"""``anchorline demo``: one agent turn, written and read back."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from rich.text import Text

from ..ids import new_message_id
from ..ops import Add, Reserve, UpdateContent
from ..runner import Pipeline
from .common import CLIError, Needs, add_command
from .output import out, print_conversation

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    add_command(sub, "demo", run, Needs(creates=True, probe=True))


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Play one agent turn: the user's message, then a streamed assistant answer."""
    conversation_id = f"demo-{new_message_id()}"
    out.print(Text.assemble(("conversation", "bold"), f" {conversation_id}"))
    question = "What is a good name for a message store that never loses a token?"
    pipeline.persist(Add(conversation_id=conversation_id, role="user", content=question))
    out.print(Text.assemble(("user", "cyan"), f"      {question}"))
    reserved = pipeline.persist(Reserve(conversation_id=conversation_id, role="assistant"))
    message_id = reserved.message.id
    assistant = ("assistant", "magenta")
    out.print(Text.assemble(assistant, f" reserved message id {message_id} before the first token"))
    answer = ""
    for chunk in ("Anchorline: ", "every streamed token ", "is anchored ", "to a stable id."):
        answer += chunk
        pipeline.persist(
            UpdateContent(
                message_id=message_id, content=[{"type": "text", "text": answer}], final=False
            )
        )
        out.print(Text.assemble(assistant, f" partial flush: {answer!r}"))
        time.sleep(0.05)
    pipeline.persist(
        UpdateContent(message_id=message_id, content=[{"type": "text", "text": answer}])
    )
    out.print(Text.assemble(assistant, " final content written"))
    print_conversation(pipeline.messages(conversation_id))
    if pipeline.settings.index is not None:
        pipeline.flush_index(timeout=60)
        query = "which token store anchors a stable id"
        hits = pipeline.search(query, conversation_id=conversation_id, limit=1)
        if not hits or hits[0].message.id != message_id:
            raise CLIError("search did not find the turn just written")
        found = f" {query!r} finds {hits[0].message.id} (score {hits[0].score:.2f})"
        out.print(Text.assemble(("search", "bold"), found))
    return 0
