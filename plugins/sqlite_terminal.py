"""The default terminal: every op that reaches the end of the chain is written to SQLite."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import apsw

from anchorline.context import Context
from anchorline.hookspecs import hookimpl
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.sqlite import crud
from anchorline.memory.sqlite.connection import resolve_durability
from anchorline.memory.sqlite.store import SQLiteStore
from anchorline.ops import Add, Delete, PersistOp, Reserve, Update, UpdateContent
from anchorline.results import Message, PersistResult
from anchorline.settings import Settings

Write = Callable[[apsw.Connection], PersistResult]


def _joining(fn: Callable[..., PersistResult]) -> Callable[..., PersistResult]:
    """``fn`` without its own-transaction wrapper (``crud.atomic``): the terminal always
    writes inside its retried transaction, and the wrapper costs about 1 µs per op."""
    inner: Callable[..., PersistResult] = fn.__wrapped__  # type: ignore[attr-defined]
    return inner


_ADD = _joining(crud.add_message)
_RESERVE = _joining(crud.reserve_message)
_DELETE = _joining(crud.delete_message)
_UPDATES: dict[type, Callable[..., PersistResult]] = {
    UpdateContent: _joining(crud.update_message_content),
    Update: _joining(crud.update_message_metadata),
}


def _write_for(op: PersistOp, expected: int | None) -> Write:
    """Bind ``op`` to its CRUD function, fixing id and time so a retry writes the same row."""
    if isinstance(op, Add):
        mid = op.message_id or new_message_id()
        return partial(_ADD, op=op, message_id=mid, now=clock.now())
    if isinstance(op, Reserve):
        mid = op.message_id or new_message_id()
        return partial(_RESERVE, op=op, message_id=mid, now=clock.now())
    if isinstance(op, Delete):
        return partial(_DELETE, op=op, expect_updated_at=expected)
    return partial(_UPDATES[type(op)], op=op, now=wall_ms(), expect_updated_at=expected)


class SQLiteTerminal:
    """Writes ops to the SQLite file and answers reads from it."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"SQLiteTerminal({self.store.path!r})"

    @hookimpl(trylast=True)
    def persist(self, op: PersistOp, context: Context) -> PersistResult:
        expected = None
        if context.expected and not isinstance(op, Add | Reserve):
            expected = context.expected.pop(op.message_id, None)
        write = _write_for(op, expected)
        unit = context.unit
        if unit is None:
            return self.store.write(write)
        return unit.join(self.store, self.store.begin).run(write)

    @hookimpl(trylast=True)
    def get_message(self, message_id: str, context: Context) -> Message | None:
        return self.store.read(partial(crud.get_message, message_id=message_id))

    @hookimpl(trylast=True)
    def list_messages(
        self, conversation_id: str, limit: int | None, context: Context
    ) -> list[Message]:
        return self.store.read(
            partial(crud.list_messages, conversation_id=conversation_id, limit=limit)
        )

    @hookimpl(trylast=True)
    def list_reserved(self, updated_before: int, limit: int, context: Context) -> list[Message]:
        return self.store.read(
            partial(crud.list_reserved, updated_before=updated_before, limit=limit)
        )

    @hookimpl
    def pipeline_closing(self, context: Context) -> None:
        self.store.close()


def create(settings: Settings) -> Any:
    """The default terminal, unless the pipeline was given one."""
    durability = resolve_durability(settings.durability)  # a bad value is refused either way
    if settings.terminal is not None:
        return None
    return SQLiteTerminal(
        SQLiteStore(settings.path, settings.retry, vfs=settings.vfs, durability=durability)
    )
