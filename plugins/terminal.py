"""The default terminal: every op that reaches the end of the chain is written to the store."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from anchorline.context import Context, UnitOfWork
from anchorline.errors import AnchorlineError
from anchorline.hookspecs import hookimpl
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.durability import resolve_durability
from anchorline.memory.interface import ChangeLog, SoleWrites, Store, Transaction
from anchorline.memory.stores import open_store
from anchorline.ops import (
    COMPACTION_ROLE,
    Add,
    Compact,
    Delete,
    Forget,
    PersistOp,
    Reserve,
    Update,
    UpdateContent,
)
from anchorline.results import Message, PersistResult
from anchorline.settings import Settings

T = TypeVar("T")


class StoreTerminal:
    """Writes ops to a :class:`~anchorline.memory.interface.Store` and answers reads from it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The unit of work keys its participants by store (mypy does not count a
        # protocol as hashable, though every store is).
        self._key: Hashable = cast(Hashable, store)
        sole: SoleWrites | None = getattr(store, "begin_sole", None) and cast(SoleWrites, store)
        self._begin_sole = store.begin if sole is None else sole.begin_sole

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
            return self._own_unit(lambda context: self.persist(op, context), context)
        if unit.sole_now():  # the call's one write, committed right after it
            return self._write(unit.join(self._key, self._begin_sole), op, context)
        return self._write(unit.join(self._key, self.store.begin), op, context)

    @hookimpl(trylast=True)
    def persist_batch(self, ops: list[PersistOp], context: Context) -> list[PersistResult]:
        unit = context.unit
        if unit is None:
            return self._own_unit(lambda context: self.persist_batch(ops, context), context)
        tx = unit.join(self._key, self.store.begin)
        add_many = getattr(tx, "add_many", None)  # a store that writes many adds at once
        results: list[PersistResult] = []
        i, count = 0, len(ops)
        while i < count:
            if add_many is not None and type(ops[i]) is Add:
                end = i + 1
                while end < count and type(ops[end]) is Add:
                    end += 1
                run = cast(list[Add], ops[i:end])
                # Ids and times are fixed before the write, so a retry writes the same rows.
                ids = [op.message_id or new_message_id() for op in run]
                nows = [clock.now() for _ in run]
                try:
                    results += add_many(run, message_ids=ids, nows=nows)
                except AnchorlineError as e:
                    e.op_index = i + (e.op_index or 0)
                    raise
                i = end
                continue
            try:
                results.append(self._write(tx, ops[i], context))
            except AnchorlineError as e:
                e.op_index = i
                raise
            i += 1
        return results

    def _write(self, tx: Transaction, op: PersistOp, context: Context) -> PersistResult:
        expected = None
        if context.expected and not isinstance(op, Add | Reserve | Forget | Compact):
            expected = context.expected.pop(op.message_id, None)
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
        if isinstance(op, Forget):
            return tx.forget(op)
        if isinstance(op, Compact):
            return tx.compact(op, message_id=new_message_id(), now=clock.now())
        raise TypeError(f"not an op: {op!r}")

    def _own_unit(self, write: Callable[[Context], T], context: Context) -> T:
        """``write`` in a unit of work of its own, committed (for a call outside the runner)."""
        unit = UnitOfWork()
        try:
            result = write(Context(context.pipeline, unit, context.expected))
            unit.commit()
        except BaseException:
            unit.rollback()
            raise
        if not unit.corrections:
            return result
        if isinstance(result, list):  # persist_batch's
            return cast(T, [unit.corrected(r) for r in result])
        return unit.corrected(result)

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
    def index_text(self, message: Message, context: Context) -> str | None:
        """A compaction has no text to index: its summary stands in for messages that are
        indexed themselves."""
        return "" if message.role == COMPACTION_ROLE else None

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
