"""What a model should see of a conversation: its latest compaction, then what it kept.

A compaction (:class:`~anchorline.ops.Compact`) is a row of the conversation's
log with the role ``compaction``: its content is the summary, its metadata's
``first_kept_seq`` the first message it keeps. ``Pipeline.messages`` leaves
these rows out unless asked for (``roles=["compaction"]``); :func:`model_context`
(behind ``Pipeline.context``) reads them through the same read hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InvalidOp
from .ops import COMPACTION_ROLE, ROLES
from .results import Message

if TYPE_CHECKING:
    from .context import PipelineView


def first_kept_seq(compaction: Message) -> int:
    """The seq of the first message ``compaction`` keeps (every earlier one it stands in
    for)."""
    value: Any = compaction.metadata.get("first_kept_seq")
    return value if type(value) is int else 0


def check_target(pipeline: PipelineView, conversation_id: str, first_kept_seq: int) -> None:
    """:class:`InvalidOp` unless ``conversation_id`` holds messages and ``first_kept_seq``
    is at most its last seq + 1 (which keeps nothing): what a compaction needs of the
    store, checked before the op is sent."""
    every_role = (*sorted(ROLES), COMPACTION_ROLE)
    newest = pipeline.messages(conversation_id, limit=1, roles=every_role)
    if not newest:
        raise InvalidOp(
            f"conversation_id: conversation {conversation_id!r} has no messages to compact"
        )
    last_seq = newest[0].seq
    if type(first_kept_seq) is int and first_kept_seq > last_seq + 1:
        raise InvalidOp(
            f"first_kept_seq: {first_kept_seq} is past the end of conversation"
            f" {conversation_id!r}, whose last seq is {last_seq}; use at most {last_seq + 1}"
        )


def check_as_of_seq(as_of_seq: object) -> int | None:
    """``as_of_seq`` if it is ``None`` or an integer >= 0, or :class:`InvalidOp`."""
    if as_of_seq is not None and (type(as_of_seq) is not int or as_of_seq < 0):
        raise InvalidOp(f"as_of_seq: must be a non-negative integer or None, got {as_of_seq!r}")
    return as_of_seq


def latest_compaction(
    pipeline: PipelineView, conversation_id: str, as_of_seq: int | None
) -> Message | None:
    """The conversation's newest compaction at or before ``as_of_seq`` (any, if ``None``)."""
    if as_of_seq is None:
        newest = pipeline.messages(conversation_id, limit=1, roles=[COMPACTION_ROLE])
        return newest[0] if newest else None
    found = None
    for compaction in pipeline.messages(conversation_id, roles=[COMPACTION_ROLE]):
        if compaction.seq > as_of_seq:
            break
        found = compaction
    return found


def model_context(
    pipeline: PipelineView, conversation_id: str, as_of_seq: int | None
) -> list[Message]:
    """The latest compaction (if any), then every complete message from its
    ``first_kept_seq`` on, in seq order; with ``as_of_seq``, the same as it stood once
    that seq was written. Placeholders (an answer still streaming, or one whose stream
    died) are not context yet."""
    compaction = latest_compaction(pipeline, conversation_id, as_of_seq)
    after = None if compaction is None else max(first_kept_seq(compaction) - 1, 0)
    kept = [
        message
        for message in pipeline.messages(conversation_id, after_seq=after)
        if message.status == "complete" and (as_of_seq is None or message.seq <= as_of_seq)
    ]
    return kept if compaction is None else [compaction, *kept]
