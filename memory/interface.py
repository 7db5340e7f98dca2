"""What every store implements: the seam between the plugins and a database.

A store is a folder under ``memory/`` (``sqlite/``, ``postgres/``) whose store
class satisfies :class:`Store`. The terminal and the indexer reach a database
only through these protocols, so nothing above ``memory/<store>`` knows which
database it is talking to. Semantics are defined once, here and in the
contract suite (``tests/contract/``), which runs over every store.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Protocol

import attrs

from anchorline.memory.journal import Corrections
from anchorline.ops import Add, Compact, Delete, Forget, Reserve, Update, UpdateContent
from anchorline.results import (
    Added,
    Change,
    Compacted,
    ContentUpdated,
    Conversation,
    Deleted,
    Forgotten,
    IndexStatus,
    Message,
    Reserved,
    Updated,
)


@attrs.frozen
class ConversationState:
    """A conversation's row as a store keeps it: what copying carries over besides its
    messages (``next_seq`` is the seq its next message gets; seqs are never reused)."""

    id: str
    parent_id: str | None
    next_seq: int
    first_at: int
    last_at: int


class Transaction(Protocol):
    """One write transaction in one store: a unit of work's participant.

    The caller fixes each write's id and time before the first attempt, so a
    retry (after a busy database, a dropped connection, a server restart)
    writes exactly the same row. Checks that refuse an op (``Conflict``,
    ``MessageNotFound``) run before the op writes anything, so a refused op
    leaves the rest of the transaction as it was. Until :meth:`commit` or
    :meth:`rollback`, the store is held for this transaction.
    """

    def add(self, op: Add, *, message_id: str, now: int) -> Added:
        """Write a complete message; a repeated ``client_message_id`` returns the stored
        one (``deduplicated=True``), or completes its own reserved placeholder."""
        ...

    def add_many(
        self, ops: Sequence[Add], *, message_ids: Sequence[str], nows: Sequence[int]
    ) -> list[Added]:
        """Write complete messages, each as :meth:`add` would with its id and time, in
        as few round trips as the store can; a refused op leaves none of them written,
        its error's ``op_index`` naming its position in ``ops``."""
        ...

    def reserve(self, op: Reserve, *, message_id: str, now: int) -> Reserved:
        """Write an empty placeholder (content ``[]``, status ``reserved``)."""
        ...

    def update_content(
        self, op: UpdateContent, *, now: int, expected: int | None
    ) -> ContentUpdated:
        """Replace the content; ``expected`` is the caller's ``updated_at`` guard."""
        ...

    def update(self, op: Update, *, now: int, expected: int | None) -> Updated:
        """Shallow-merge the op's metadata into the stored metadata."""
        ...

    def delete(self, op: Delete, *, expected: int | None) -> Deleted:
        """Delete the message; an unknown id gives ``existed=False``."""
        ...

    def restore(self, message: Message) -> bool:
        """Write ``message`` exactly as given (id, times, status, client id), unless the
        store holds its id with an ``updated_at`` at or after the message's; True if it
        was written. For copying a store: a second copy finishes the first. Another
        message holding its ``client_message_id`` is a ``Conflict``."""
        ...

    def restore_conversation(self, state: ConversationState) -> bool:
        """Bring the conversation's row up to ``state`` (from another store): its
        ``parent_id`` if it has none, its next seq, first and last times moved on to
        ``state``'s where those are later (earlier, for the first time). Its message
        count is the store's own. True if it changed."""
        ...

    def forget(self, op: Forget) -> Forgotten:
        """Delete every message of the conversation (placeholders included) and queue
        the deletion of their index points; ``deleted`` counts the messages."""
        ...

    def compact(self, op: Compact, *, message_id: str, now: int) -> Compacted:
        """Write the compaction row (role ``compaction``, the summary as its content,
        ``first_kept_seq`` in its metadata) with the conversation's next seq. It is
        never queued for the index."""
        ...

    def commit(self) -> Corrections | None:
        """Make every write durable, or raise ``StorageUnavailable`` with nothing written.

        A retried attempt may store a write differently from the first (another
        writer took the seq meanwhile): return the ``(handed out, committed)`` pairs
        of those results (``anchorline.memory.journal``), so the caller returns what
        is stored; ``None`` or empty when every result stands.
        """
        ...

    def rollback(self) -> None:
        """Drop every write of the transaction."""
        ...


@attrs.frozen
class OutboxItem:
    """One intent to index a message: ``action`` is ``upsert``, ``payload`` or ``delete``.

    ``seq`` changes whenever the message is queued again, so finishing an item
    that was re-queued meanwhile leaves the newer intent in place.
    """

    message_id: str
    action: str
    seq: int
    attempts: int


def backoff_ms(attempts: int) -> int:
    """The wait before the next try of an item that failed ``attempts`` times: 0.5 s to 5 min
    (random within the upper half, so failed items of many drainers spread out)."""
    ceiling = min(300_000, 500 * 2 ** min(attempts, 20))
    return int(random.uniform(ceiling / 2, ceiling))


#: The metadata key under which a store keeps the number of complete messages that
#: have no text to index (and so no point), to check the index by counts.
TEXTLESS_KEY = "index_textless"


@attrs.frozen
class OutboxCounts:
    """What the index should hold: complete messages, waiting items, messages without text."""

    complete: int
    pending: int
    textless: int


class Outbox(Protocol):
    """The durable queue of intents to index.

    Intents are written in the same transaction as the message write that
    causes them (whatever wrote it), so an acknowledged write is never missing
    from the queue. Items are claimed under a lease, so several drainers (in
    any number of processes) never work on the same item at once, and a
    drainer that dies leaves its claim to expire. Failed items keep their
    place with the error and a backoff.
    """

    def enable(self) -> None:
        """Start recording intents (once per database), queueing every complete message."""
        ...

    def has_due(self, *, force: bool = False) -> bool:
        """Whether an item could be claimed now; ``force`` ignores backoff."""
        ...

    def claim(self, *, limit: int, lease_ms: int = 60_000, force: bool = False) -> list[OutboxItem]:
        """Lease up to ``limit`` due items, oldest first; ``force`` ignores backoff."""
        ...

    def done(self, items: Sequence[OutboxItem], textless: int = 0) -> None:
        """Remove finished items (unless re-queued meanwhile); add ``textless`` to the
        count of complete messages that have no text to index."""
        ...

    def failed(self, items: Sequence[OutboxItem], error: str) -> None:
        """Keep failed items with the error, an attempt more, and a backoff."""
        ...

    def status(self) -> IndexStatus:
        """How many items wait, how many are failing, the oldest, the last error."""
        ...

    def counts(self) -> OutboxCounts:
        """The figures the index is checked against when it opens."""
        ...

    def pending_ids(self) -> set[str]:
        """The ids of every message with an item waiting."""
        ...

    def unqueued_complete(self) -> list[str]:
        """The ids of complete messages with no item waiting."""
        ...

    def enqueue_missing(self) -> int:
        """Queue every complete message that has no item waiting; returns how many."""
        ...

    def requeue(self, message_ids: Sequence[str], textless: int) -> None:
        """Queue ``message_ids`` for an upsert and set the count of textless messages."""
        ...

    def reindex_started(self) -> bool:
        """Whether a reindex was started and not finished (it resumes)."""
        ...

    def start_reindex(self) -> None:
        """Queue every complete message and record that a reindex runs, in one transaction."""
        ...

    def finish_reindex(self) -> None:
        """Record that the reindex is done."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until another writer may have queued work, :meth:`wake` is called, or
        ``timeout`` seconds pass; True when woken early. A store that cannot be told of
        other writers returns after ``timeout`` unless woken."""
        ...

    def wake(self) -> None:
        """Make a :meth:`wait` in progress (or the next one) return at once: for this
        process's own writes, and for closing. Cheap: it runs after every write."""
        ...


class Watch(Protocol):
    """Tells a follower of the change feed that a write may have committed."""

    def wait(self, timeout: float) -> bool:
        """Block until a write may have committed since the watch began or the last
        ``wait`` returned True, or ``timeout`` seconds pass (False), or the store
        closes (True: the follower reads, finds the store closed and stops)."""
        ...

    def close(self) -> None:
        """Stop watching."""
        ...


class ChangeLog(Protocol):
    """A store's conversation log: the change feed and the conversations
    (docs/conversation-log.md). Every store and the in-memory terminal keep one."""

    def changes(self, after: int, limit: int) -> list[Change]:
        """Up to ``limit`` changes with a cursor above ``after``, in cursor (commit) order;
        :class:`~anchorline.errors.CursorExpired` if changes after ``after`` were trimmed."""
        ...

    def last_cursor(self) -> int:
        """The newest cursor handed out (0 for an empty feed)."""
        ...

    def trim_changes(self, before: int) -> int:
        """Drop the changes with a cursor below ``before`` (the newest is always kept);
        returns how many."""
        ...

    def watch(self) -> Watch:
        """Start watching for commits (before reading, so none is missed)."""
        ...

    def conversations(
        self, limit: int | None, after: tuple[int, str] | None, parent_id: str | None
    ) -> list[Conversation]:
        """Conversations, newest activity first (``last_at``, then id, descending), after
        the ``(last_at, id)`` key ``after``; only children of ``parent_id`` if given."""
        ...


class Store(ChangeLog, Protocol):
    """One database: write transactions, the reads the read hooks need, the outbox.

    ``anchorline.memory.stores.open_store`` opens a store class as
    ``StoreClass(location, retry=RetryPolicy | None, durability="normal" | "full")``.
    """

    #: Where the data is, for messages: a file path, or a URL without its password.
    location: str

    @property
    def outbox(self) -> Outbox:
        """The store's index outbox."""
        ...

    def begin(self) -> Transaction:
        """Start a write transaction (commit or roll it back to let others in)."""
        ...

    def get_message(self, message_id: str) -> Message | None: ...

    def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        """The stored messages among ``message_ids``, in no particular order."""
        ...

    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> list[Message]:
        """The conversation's messages in seq order; ``limit`` alone keeps the newest
        ``limit``, with ``after_seq`` the first ``limit`` whose seq is greater; ``roles``
        keeps those roles only."""
        ...

    def list_reserved(self, updated_before: int, limit: int) -> list[Message]:
        """Placeholders last written before ``updated_before`` (ms), oldest first."""
        ...

    def complete_messages(self) -> Iterator[Message]:
        """Every complete message, streamed (for the index's consistency check)."""
        ...

    def scan(self, after_id: str | None, limit: int) -> list[Message]:
        """Up to ``limit`` messages whose id sorts after ``after_id``, in id order, placeholders
        included: a resumable walk over the whole store (for copying it)."""
        ...

    def scan_conversations(self, after_id: str | None, limit: int) -> list[ConversationState]:
        """Up to ``limit`` conversations whose id sorts after ``after_id``, in id order, as
        the store keeps them (for copying it)."""
        ...

    def close(self) -> None: ...


class SoleWrites(Protocol):
    """What a store may add to :class:`Store` to make a lone write cheaper.

    The terminal begins with :meth:`begin_sole` when the runner has said
    (``UnitOfWork.sole``) that the call writes one op and commits right after it,
    with nothing in between that could undo it. The transaction may then commit
    that write as it makes it (a server store: the write, its change feed row and
    the commit in one round trip); its ``commit`` only finishes, and ``rollback``
    has nothing left to undo. A second write in it is refused.
    """

    def begin_sole(self) -> Transaction: ...
