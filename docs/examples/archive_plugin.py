"""A plugin that keeps some conversations out of SQLite: it answers their writes AND reads.

Conversations whose id starts with ``"archive:"`` live in this plugin's own
store (a dict here; a file, a service or another database in real life). The
plugin answers every op on them by building the result itself, so the SQLite
terminal never sees them. It answers the three read hooks for them too:
``Pipeline.get``, ``messages``, ``search`` and ``sweep`` read through those
hooks, and without them the messages it stored could not be found.

It keeps the terminal contract: minted UUIDv7 ids, strictly increasing
timestamps, ``client_message_id`` deduplication, ``Conflict`` on a reused id
or a changed message (``expect_updated_at``), and all-or-none with the rest of
the call (``persist_many``), through the unit of work. It leaves out what a
real store would add: a lock for threads, and copies of the messages it hands
out. ``anchorline.plugins.in_memory.InMemoryTerminal`` is a complete in-memory
terminal to read next. Its writes are not indexed: see
``redirect_with_index.py`` for that.

Run: python3 docs/examples/archive_plugin.py
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Generator
from typing import Any

import attrs

from anchorline import (
    Add,
    Added,
    Compact,
    Conflict,
    ContentUpdated,
    Context,
    Delete,
    Deleted,
    Forget,
    Forgotten,
    InvalidOp,
    Message,
    PersistOp,
    PersistResult,
    Pipeline,
    Reserve,
    Reserved,
    Update,
    Updated,
    hookimpl,
)
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.rows import check_expected, check_replay

PREFIX = "archive:"


class Undo:
    """This store's share of a unit of work: how to undo its writes if the call fails."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], object]] = []

    def commit(self) -> None:
        self.steps.clear()

    def rollback(self) -> None:
        while self.steps:
            self.steps.pop()()


class Archive:
    """Stores the conversations whose id starts with "archive:" in a dict."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.last_seq: dict[str, int] = {}  # per conversation; a seq is never reused

    def _mine(self, op: PersistOp) -> bool:
        if isinstance(op, Add | Reserve | Forget | Compact):
            return op.conversation_id.startswith(PREFIX)
        return op.message_id in self.messages

    # --- writes: answer the op with the result its kind calls for -----------

    @hookimpl
    def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
        if not self._mine(op):
            return None  # not ours: on down the chain, to SQLite
        if isinstance(op, Add | Reserve):
            return self._create(op, context)
        if isinstance(op, Forget):
            doomed = [m for m in self.messages.values() if m.conversation_id == op.conversation_id]
            for message in doomed:
                self._remove(context, message)
            return Forgotten(conversation_id=op.conversation_id, deleted=len(doomed))
        if isinstance(op, Compact):
            raise InvalidOp(f"conversation_id: {op.conversation_id!r} is archived, not compacted")
        current = self.messages[op.message_id]
        # The updated_at the caller last read (expect_updated_at), if it gave one.
        expected = context.expected.pop(op.message_id, None) if context.expected else None
        check_expected(current, expected)  # Conflict if the message changed since
        if isinstance(op, Delete):
            self._remove(context, current)
            return Deleted(message_id=op.message_id, existed=True)
        # A later write stamps updated_at from the wall clock, always past the last one.
        now = max(wall_ms(), current.updated_at + 1)
        if isinstance(op, Update):
            metadata = {**current.metadata, **copy.deepcopy(op.metadata)}  # one level deep
            return Updated(message=self._put(context, current, metadata=metadata, updated_at=now))
        if not op.final and current.status == "complete":
            raise Conflict(f"final: message {op.message_id!r} is already complete")
        return ContentUpdated(
            message=self._put(
                context,
                current,
                content=copy.deepcopy(op.content),
                status="complete" if op.final else "reserved",
                updated_at=now,
            )
        )

    def _create(self, op: Add | Reserve, context: Context) -> Added | Reserved:
        result = Added if isinstance(op, Add) else Reserved
        if op.client_message_id is not None:
            for stored in self.messages.values():
                key = (stored.conversation_id, stored.client_message_id)
                if key == (op.conversation_id, op.client_message_id):
                    check_replay(stored, op)  # Conflict if the op names another message
                    return result(message=stored, deduplicated=True)
        message_id = op.message_id or new_message_id()  # a time-ordered UUIDv7
        if message_id in self.messages:
            raise Conflict(f"message_id: a message with id {message_id!r} already exists")
        now = clock.now()  # epoch milliseconds, strictly increasing within the process
        seq = self.last_seq.get(op.conversation_id, 0) + 1
        self.last_seq[op.conversation_id] = seq
        message = Message(
            id=message_id,
            conversation_id=op.conversation_id,
            role=op.role,
            content=copy.deepcopy(op.content) if isinstance(op, Add) else [],
            metadata=copy.deepcopy(op.metadata),
            status="complete" if isinstance(op, Add) else "reserved",
            created_at=now,
            updated_at=now,
            client_message_id=op.client_message_id,
            seq=seq,
        )
        self._journal(context, message_id)
        self.messages[message_id] = message
        return result(message=message)

    def _put(self, context: Context, current: Message, **changes: Any) -> Message:
        message = attrs.evolve(current, **changes)
        self._journal(context, message.id)
        self.messages[message.id] = message
        return message

    def _remove(self, context: Context, message: Message) -> None:
        self._journal(context, message.id)
        del self.messages[message.id]

    def _journal(self, context: Context, message_id: str) -> None:
        """Join the call's unit of work, and record how to restore ``message_id``."""
        assert context.unit is not None  # persist always runs in one
        undo = context.unit.join(self, Undo)
        previous = self.messages.get(message_id)
        if previous is None:
            undo.steps.append(lambda: self.messages.pop(message_id, None))
        else:
            undo.steps.append(lambda: self.messages.__setitem__(message_id, previous))

    # --- reads: what this plugin wrote, only this plugin can find ------------

    @hookimpl
    def get_message(self, message_id: str, context: Context) -> Message | None:
        return self.messages.get(message_id)  # None: not ours, ask the next one

    @hookimpl
    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None,
        roles: tuple[str, ...] | None,
        context: Context,
    ) -> list[Message] | None:
        if not conversation_id.startswith(PREFIX):
            return None  # not ours: SQLite answers
        found = [
            m
            for m in self.messages.values()
            if m.conversation_id == conversation_id and (roles is None or m.role in roles)
        ]
        found.sort(key=lambda m: m.seq)  # oldest first
        if after_seq is not None:  # a page forward
            found = [m for m in found if m.seq > after_seq]
            return found if limit is None else found[:limit]
        return found if limit is None else found[max(len(found) - limit, 0) :]

    @hookimpl(wrapper=True)
    def list_reserved(
        self, updated_before: int, limit: int, context: Context
    ) -> Generator[None, list[Message] | None, list[Message]]:
        # A wrapper, not an answer: the sweep must see SQLite's placeholders and ours.
        found = yield
        mine = [
            m
            for m in self.messages.values()
            if m.status == "reserved" and m.updated_at < updated_before
        ]
        return sorted([*(found or []), *mine], key=lambda m: m.updated_at)[:limit]


def main() -> None:
    archive = Archive()
    with tempfile.TemporaryDirectory() as tmp:
        with Pipeline.open(f"{tmp}/chat.db", plugins=[archive]) as pipeline:
            old = pipeline.persist(Add(conversation_id="archive:2023", role="user", content="old"))
            pipeline.persist(Add(conversation_id="live", role="user", content="new"))
            left = pipeline.persist(Reserve(conversation_id="archive:2023", role="assistant"))
            print("get:", pipeline.get(old.message.id).content)  # type: ignore[union-attr]
            print("archived:", [m.content for m in pipeline.messages("archive:2023")])
            print("swept:", pipeline.sweep(older_than=0).deleted == (left.message.id,))
        with Pipeline.open(f"{tmp}/chat.db") as without_the_plugin:
            print("in SQLite:", [m.content for m in without_the_plugin.messages("archive:2023")])
            print("live in SQLite:", [m.content for m in without_the_plugin.messages("live")])


if __name__ == "__main__":
    main()
