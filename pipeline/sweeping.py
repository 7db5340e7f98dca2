"""Recovering placeholders whose writer died: the sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .context import Context
from .errors import Conflict, MessageNotFound
from .ids import clock, wall_ms
from .ops import Delete, Update, UpdateContent
from .plugin_manager import check_messages
from .results import Message

if TYPE_CHECKING:
    from .context import PipelineView

BATCH = 100


@attrs.frozen(kw_only=True)
class SweepReport:
    """What a sweep did: each field a tuple of message ids, in the order it met them.

    ``deleted``: empty placeholders, deleted; ``finalized``: partial ones, now
    complete (marked interrupted); ``skipped``: written by someone else while the
    sweep ran, left alone. ``total`` counts the deleted and the finalized.
    """

    deleted: tuple[str, ...] = ()
    finalized: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return len(self.deleted) + len(self.finalized)


def _recover(pipeline: PipelineView, message: Message) -> str:
    guard = {message.id: message.updated_at}
    if not message.content:
        pipeline.persist(Delete(message_id=message.id), expect_updated_at=guard)
        return "deleted"
    pipeline.persist_many(
        [
            Update(
                message_id=message.id,
                metadata={"interrupted": True, "interrupted_by": "sweep"},
            ),
            UpdateContent(message_id=message.id, content=message.content, final=True),
        ],
        expect_updated_at=guard,
    )
    return "finalized"


def sweep(pipeline: PipelineView, older_than: float) -> SweepReport:
    # The write clock too, not only the wall clock: after a burst of new
    # messages it is ahead of wall time, and of every timestamp written here.
    now = max(clock.now(), wall_ms())
    cutoff = now + 1 - int(older_than * 1000)  # older_than=0 takes everything written so far
    done: dict[str, list[str]] = {"deleted": [], "finalized": [], "skipped": []}
    seen: set[str] = set()
    while True:
        hook = pipeline.plugin_manager.hook.list_reserved
        stale = check_messages(
            hook, hook(updated_before=cutoff, limit=BATCH, context=Context(pipeline))
        )
        fresh = [m for m in stale if m.id not in seen]
        for message in fresh:
            seen.add(message.id)
            try:
                done[_recover(pipeline, message)].append(message.id)
            except (Conflict, MessageNotFound):
                done["skipped"].append(message.id)  # its writer is alive after all
        if len(stale) < BATCH or not fresh:
            break
    return SweepReport(
        deleted=tuple(done["deleted"]),
        finalized=tuple(done["finalized"]),
        skipped=tuple(done["skipped"]),
    )
