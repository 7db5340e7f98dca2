"""What a write returns: one result class per op, each carrying the op's ``kind``."""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal, TypeAlias

import attrs

from .ops import (
    Add,
    Compact,
    Content,
    Delete,
    Forget,
    PersistOp,
    Reserve,
    Update,
    UpdateContent,
)

Status: TypeAlias = Literal["reserved", "complete"]


@attrs.frozen(kw_only=True)
class Message:
    """A stored message. Timestamps are integer milliseconds since the epoch.

    ``seq`` is the message's place in its conversation: assigned by the store
    when the message is created (1, 2, 3, ... per conversation; strictly
    increasing, never reused after a delete, gaps possible). ``0`` means no
    store assigned one (a ``Message`` a plugin built itself).
    """

    id: str
    conversation_id: str
    role: str
    content: Content
    metadata: dict[str, Any]
    status: Status
    created_at: int
    updated_at: int
    client_message_id: str | None = None
    seq: int = 0

    @property
    def text(self) -> str:
        """The content string, or its ``text`` blocks joined by newlines (other blocks,
        and a ``text`` block whose ``text`` is not a string, add nothing). Computed on
        each read: a ``Message`` keeps only its fields."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            block["text"]
            for block in self.content
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        )


@attrs.frozen(kw_only=True)
class Added:
    """Result of :class:`~anchorline.ops.Add`. ``deduplicated`` means nothing new was written."""

    kind: ClassVar[Literal["add"]] = "add"
    message: Message
    deduplicated: bool = False


@attrs.frozen(kw_only=True)
class Reserved:
    """Result of :class:`~anchorline.ops.Reserve`; ``deduplicated``: nothing new was written."""

    kind: ClassVar[Literal["reserve"]] = "reserve"
    message: Message
    deduplicated: bool = False


@attrs.frozen(kw_only=True)
class ContentUpdated:
    """Result of :class:`~anchorline.ops.UpdateContent`."""

    kind: ClassVar[Literal["update_content"]] = "update_content"
    message: Message


@attrs.frozen(kw_only=True)
class Updated:
    """Result of :class:`~anchorline.ops.Update`, with the merged metadata."""

    kind: ClassVar[Literal["update"]] = "update"
    message: Message


@attrs.frozen(kw_only=True)
class Deleted:
    """Result of :class:`~anchorline.ops.Delete`; ``existed`` is false for an unknown id."""

    kind: ClassVar[Literal["delete"]] = "delete"
    message_id: str
    existed: bool


@attrs.frozen(kw_only=True)
class Hit:
    """A search result: the message, read back through the read hooks, and its score."""

    message: Message
    score: float


@attrs.frozen(kw_only=True)
class IndexStatus:
    """The outbox of index work: what is pending, and the last error if any."""

    pending: int
    failing: int
    oldest_message_id: str | None = None
    oldest_enqueued_at: int | None = None
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class Forgotten:
    """Result of :class:`~anchorline.ops.Forget`: how many messages were deleted."""

    kind: ClassVar[Literal["forget"]] = "forget"
    conversation_id: str
    deleted: int


@attrs.frozen(kw_only=True)
class Compacted:
    """Result of :class:`~anchorline.ops.Compact`: the compaction row as stored (role
    ``compaction``, the summary as its content, ``first_kept_seq`` in its metadata)."""

    kind: ClassVar[Literal["compact"]] = "compact"
    message: Message


ChangeKind: TypeAlias = Literal["add", "reserve", "update_content", "update", "delete"]


@attrs.frozen(kw_only=True)
class Change:
    """One committed write, as the change feed (``Pipeline.changes``) lists it: ids only.

    ``cursor`` orders the feed: every write of every conversation, in commit
    order; read on from the last cursor seen to miss nothing and repeat nothing.
    ``kind`` is the write's op (an ``add`` that completed its own placeholder
    included); ``final`` is whether the message was complete after it (a
    partial ``update_content`` has ``final=False``; a ``delete`` too). ``seq``
    is the message's place in its conversation, ``at`` when it was written
    (epoch milliseconds).
    """

    cursor: int
    kind: ChangeKind
    message_id: str
    conversation_id: str
    seq: int
    at: int
    final: bool


@attrs.frozen(kw_only=True)
class Conversation:
    """A conversation as ``Pipeline.conversations`` lists it.

    ``message_count`` counts the messages stored now (placeholders included);
    ``first_at`` is when it was created, ``last_at`` when its newest message
    was created (epoch milliseconds). ``parent_id`` is the conversation it was
    started from, if its first op named one. ``key`` is what to pass as
    ``after`` for the next page.
    """

    id: str
    message_count: int
    first_at: int
    last_at: int
    parent_id: str | None = None

    @property
    def key(self) -> str:
        """This conversation's place in the newest-first listing, as a page token."""
        return f"{self.last_at}:{self.id}"


PersistResult: TypeAlias = (
    Added | Reserved | ContentUpdated | Updated | Deleted | Forgotten | Compacted
)

RESULT_FOR: Final[dict[type[PersistOp], type[PersistResult]]] = {
    Add: Added,
    Reserve: Reserved,
    UpdateContent: ContentUpdated,
    Update: Updated,
    Delete: Deleted,
    Forget: Forgotten,
    Compact: Compacted,
}
