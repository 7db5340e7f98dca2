"""The default terminal: every op that reaches the end of the chain is written to the store."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

from anchorline.context import Context, UnitOfWork
from anchorline.hookspecs import hookimpl
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.interface import ChangeLog, Store
from anchorline.memory.stores import open_store, resolve_durability
from anchorline.ops import Add, Delete, PersistOp, Reserve, Update, UpdateContent
from anchorline.results import Message, PersistResult
from anchorline.settings import Settings


class StoreTerminal:
    """Writes ops to a :class:`~anchorline.memory.interface.Store` and answers reads from it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The unit of work keys its participants by store (mypy does not count a
        # protocol as hashable, though every store is).
        self._key: Hashable = cast(Hashable, store)

    def __repr__(self) -> str:
        return f"StoreTerminal({self.store!r})"

    @property
    def log(self) -> ChangeLog:
        """The store's change feed and conversations."""
        return self.store

    @hookimpl(trylast=True)
    def persist(self, op: PersistOp, context: Context) -> PersistResult:
        unit = context.unit
        if unit is None:  # called outside Pipeline.persist: a transaction of its own
            return self._persist_alone(op, context)
        expected = None
        if context.expected and not isinstance(op, Add | Reserve):
            expected = context.expected.pop(op.message_id, None)
        tx = unit.join(self._key, self.store.begin)
        # Ids and times are fixed before the write, so a retry writes the same row.
        if isinstance(op, Add):
            return tx.add(op, message_id=op.message_id or new_message_id(), now=clock.now())
        if isinstance(op, UpdateContent):
            return tx.update_content(op, now=wall_ms(), expected=expected)
        if isinstance(op, Reserve):
            return tx.reserve(op, message_id=op.message_id or new_message_id(), now=clock.now())
        if isinstance(op, Update):
            return tx.update(op, now=wall_ms(), expected=expected)
        if isinstance(op, Delete):
            return tx.delete(op, expected=expected)
        raise TypeError(f"not an op: {op!r}")

    def _persist_alone(self, op: PersistOp, context: Context) -> PersistResult:
        unit = UnitOfWork()
        try:
            result = self.persist(op, Context(context.pipeline, unit, context.expected))
            unit.commit()
        except BaseException:
            unit.rollback()
            raise
        return result

    @hookimpl(trylast=True)
    def get_message(self, message_id: str, context: Context) -> Message | None:
        return self.store.get_message(message_id)

    @hookimpl(trylast=True)
    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None,
        roles: tuple[str, ...] | None,
        context: Context,
    ) -> list[Message]:
        return self.store.list_messages(conversation_id, limit, after_seq, roles)

    @hookimpl(trylast=True)
    def list_reserved(self, updated_before: int, limit: int, context: Context) -> list[Message]:
        return self.store.list_reserved(updated_before, limit)

    @hookimpl
    def pipeline_closing(self, context: Context) -> None:
        self.store.close()


def create(settings: Settings) -> Any:
    """The default terminal on the store ``settings.path`` names, unless the pipeline was
    given one."""
    durability = resolve_durability(settings.durability)  # a bad value is refused either way
    if settings.terminal is not None:
        return None
    return StoreTerminal(
        open_store(settings.path, retry=settings.retry, durability=durability, vfs=settings.vfs)
    )
