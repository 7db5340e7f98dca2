"""The read queries both SQL stores share, written once: each store passes its
:class:`Dialect` (its placeholder, its table's name, how it asks for one of many
values) and runs the SQL and values it gets back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from anchorline.ops import COMPACTION_ROLE

from .rows import READ_COLUMNS


@attrs.frozen
class Dialect:
    """What differs between the stores' SQL: ``mark`` is the driver's placeholder,
    ``messages`` the messages table's name; with ``arrays`` the driver passes a list
    as one value (``= ANY(%s)``), else each value gets its own placeholder."""

    mark: str
    messages: str
    arrays: bool = False
    #: What a read of messages starts with.
    select: str = attrs.field(init=False)

    @select.default
    def _select(self) -> str:
        return f"SELECT {READ_COLUMNS} FROM {self.messages}"

    def one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A condition that ``column`` is one of ``values``, and its values."""
        if self.arrays:
            return f"{column} = ANY({self.mark})", [list(values)]
        return f"{column} IN ({', '.join([self.mark] * len(values))})", list(values)


def messages(
    d: Dialect,
    conversation_id: str,
    limit: int | None,
    after_seq: int | None,
    roles: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    """The conversation's messages in seq order: all of them; with ``limit``, the newest
    ``limit``; with ``after_seq``, the first ``limit`` (or all) whose seq is greater.
    ``roles`` keeps only messages of those roles; without it, compactions are left out."""
    where = f"conversation_id = {d.mark}"
    params: list[Any] = [conversation_id]
    if roles == (COMPACTION_ROLE,):  # a literal, so the planner uses the partial index
        where += " AND role = 'compaction'"
    elif roles is not None:
        condition, values = d.one_of("role", roles)
        where += f" AND {condition}"
        params += values
    else:
        where += " AND role <> 'compaction'"
    if after_seq is not None:
        where += f" AND seq > {d.mark}"
        params.append(after_seq)
    if limit is None:
        return f"{d.select} WHERE {where} ORDER BY seq", params
    params.append(limit)
    if after_seq is not None:
        return f"{d.select} WHERE {where} ORDER BY seq LIMIT {d.mark}", params
    newest = f"{d.select} WHERE {where} ORDER BY seq DESC LIMIT {d.mark}"
    return f"SELECT * FROM ({newest}) AS newest ORDER BY seq", params


def reserved(d: Dialect, updated_before: int, limit: int) -> tuple[str, list[Any]]:
    """Messages still ``reserved`` and last written before ``updated_before``, oldest
    first (then in the order they were written)."""
    return (
        f"{d.select} WHERE status = 'reserved' AND updated_at < {d.mark}"
        f" ORDER BY updated_at, rowid LIMIT {d.mark}",
        [updated_before, limit],
    )


def page(
    d: Dialect, after_id: str | None, limit: int, *, complete_only: bool = False
) -> tuple[str, list[Any]]:
    """Up to ``limit`` messages (``complete_only``: complete ones) whose id sorts after
    ``after_id``, in id order. Without ``after_id`` the condition is left out, not
    written as ``IS NULL OR``, which would keep the planner off the id index."""
    where = [f"id > {d.mark}"] if after_id is not None else []
    if complete_only:
        where.append("status = 'complete'")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params: list[Any] = [after_id, limit] if after_id is not None else [limit]
    return f"{d.select}{clause} ORDER BY id LIMIT {d.mark}", params
