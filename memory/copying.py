"""Copying every conversation from one store to another (SQLite to Postgres and back)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .interface import Store

#: Messages read and written per transaction.
BATCH = 500


@attrs.frozen
class CopyReport:
    """What a copy did: messages read from the source, written to the target, left as
    they were (already there, as new or newer)."""

    read: int
    written: int
    unchanged: int
    #: Conversations whose row (parent, next seq, times) the copy brought up to date.
    conversations: int = 0


def copy_store(
    source: Store,
    target: Store,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every message of ``source`` (placeholders included) into ``target``.

    Messages keep their ids, timestamps, status, client ids and seqs; then each
    conversation's row follows (its parent, and its next seq, so that a seq handed
    out in the source, even to a message deleted since, is never handed out again
    in the target). Deletions are not copied: a message or conversation deleted
    or forgotten in the source after an earlier copy stays in the target. The walk goes
    in id order, one transaction per ``batch``, and a message the target
    already holds as new or newer is left alone: a second run after an
    interruption finishes the job without duplicates, and a run over a
    finished copy writes nothing. A target with an index queues the complete
    messages it receives, like any write. ``progress`` is called with the
    number of messages read so far after each batch.
    """
    if batch < 1:
        raise ValueError(f"batch: must be at least 1, got {batch!r}")
    read = written = 0
    after: str | None = None
    while True:
        messages = source.scan(after, batch)
        if not messages:
            break
        tx = target.begin()
        try:
            written += sum(tx.restore(message) for message in messages)
        except BaseException:
            tx.rollback()
            raise
        tx.commit()
        read += len(messages)
        after = messages[-1].id
        if progress is not None:
            progress(read)
    conversations = 0
    last: str | None = None
    while True:
        states = source.scan_conversations(last, batch)
        if not states:
            break
        tx = target.begin()
        try:
            conversations += sum(tx.restore_conversation(state) for state in states)
        except BaseException:
            tx.rollback()
            raise
        tx.commit()
        last = states[-1].id
    return CopyReport(
        read=read, written=written, unchanged=read - written, conversations=conversations
    )
