"""A redirecting plugin that indexes its own writes.

Ops the plugin answers never reach the default terminal, so the terminal's
outbox never sees them and the default indexer cannot index them. This plugin
keeps conversations whose id starts with ``"ephemeral:"`` in memory and
indexes their complete messages itself, in ``after_persist``, with the
pipeline's own embedder and vector index. Its index is as durable as its
store (here, not at all); a plugin with a durable store should keep its own
outbox in that store, written in the same transaction as the message.

Run: python3 docs/examples/redirect_with_index.py
"""

from __future__ import annotations

from collections.abc import Generator

from anchorline import (
    Add,
    Context,
    Delete,
    Message,
    PersistOp,
    PersistResult,
    Pipeline,
    hookimpl,
)
from anchorline.memory.index.sync import payload
from anchorline.memory.index.vector_index import Point
from anchorline.plugins.in_memory import InMemoryTerminal
from anchorline.plugins.indexer import Indexer
from anchorline.plugins.text_extraction import message_text


class EphemeralConversations:
    def __init__(self) -> None:
        self.store = InMemoryTerminal()

    def _mine(self, op: PersistOp) -> bool:
        conversation = getattr(op, "conversation_id", None)
        if conversation is not None:
            return bool(conversation.startswith("ephemeral:"))
        return getattr(op, "message_id", None) in self.store.messages

    @hookimpl
    def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
        return self.store.persist(op, context) if self._mine(op) else None

    # A plugin that answers writes answers the reads of what it wrote, too.

    @hookimpl
    def get_message(self, message_id: str, context: Context) -> Message | None:
        return self.store.get_message(message_id, context)

    @hookimpl
    def list_messages(
        self, conversation_id: str, limit: int | None, context: Context
    ) -> list[Message] | None:
        if not conversation_id.startswith("ephemeral:"):
            return None
        return self.store.list_messages(conversation_id, limit, context)

    @hookimpl(wrapper=True)
    def list_reserved(
        self, updated_before: int, limit: int, context: Context
    ) -> Generator[None, list[Message] | None, list[Message]]:
        found = yield  # SQLite's placeholders, to which this store's are added
        mine = self.store.list_reserved(updated_before, limit, context)
        return sorted([*(found or []), *mine], key=lambda m: m.updated_at)[:limit]

    @hookimpl
    def after_persist(self, op: PersistOp, result: PersistResult, context: Context) -> None:
        indexer = context.pipeline.plugin_manager.get_plugin("indexer")
        if not isinstance(indexer, Indexer) or indexer.index is None or indexer.embedder is None:
            return
        if isinstance(op, Delete):
            if result.existed:  # type: ignore[union-attr]
                indexer.index.delete([op.message_id])
            return
        message = getattr(result, "message", None)
        if message is None or message.id not in self.store.messages:
            return
        text = message_text(message) if message.status == "complete" else ""
        if text:
            [vector] = indexer.embedder.embed([text])
            indexer.index.upsert([Point(message.id, list(vector), payload(message))])


def main() -> None:
    plugin = EphemeralConversations()
    with Pipeline.open(":memory:", index=":memory:", index_sync=True, plugins=[plugin]) as p:
        p.persist(Add(conversation_id="ephemeral:1", role="user", content="haiku on autumn leaves"))
        p.persist(Add(conversation_id="kept", role="user", content="final report on autumn sales"))
        for hit in p.search("autumn leaves haiku", limit=2):
            print(f"{hit.score:.3f}  {hit.message.conversation_id}: {hit.message.content}")
        print("ephemeral:1 holds", [m.content for m in p.messages("ephemeral:1")])


if __name__ == "__main__":
    main()
