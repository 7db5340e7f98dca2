"""Pydantic AI message histories kept in an Anchorline pipeline.

Save what a run added, load it back as the next run's ``message_history``::

    history = load_history(pipeline, "c1")
    result = agent.run_sync("What next?", message_history=history)
    save_history(pipeline, "c1", result.new_messages())

Each ``ModelMessage`` is one message of the conversation, written through the
pipeline's hook chain; it reads back equal to what was saved
(``ModelMessagesTypeAdapter``). Install with ``pip install 'anchorline[pydantic-ai]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

try:
    from pydantic_ai.messages import (
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelRequest,
        ModelResponse,
        RetryPromptPart,
        SystemPromptPart,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "pydantic_ai":
        raise
    raise ModuleNotFoundError(
        "anchorline.integrations.pydantic_ai needs Pydantic AI:"
        " pip install 'anchorline[pydantic-ai]'",
        name="pydantic_ai",
    ) from e

from anchorline.ops import COMPACTION_ROLE, Add
from anchorline.results import Compacted, Message, PersistResult
from anchorline.runner import Pipeline

from .items import item_content, stored_item

#: The ``type`` of the content block that holds a ``ModelMessage`` as JSON.
ITEM_TYPE = "pydantic_ai.message"


def message_role(message: ModelMessage) -> str:
    """The Anchorline role a ``ModelMessage`` is stored under: ``assistant`` for a model
    response; for a request, ``user`` if it carries a user prompt, else ``tool`` if it
    returns tool results, else ``system``."""
    if isinstance(message, ModelResponse):
        return "assistant"
    kinds = {type(part) for part in message.parts}
    if UserPromptPart in kinds:
        return "user"
    if ToolReturnPart in kinds:
        return "tool"
    return "system"


def message_text(message: ModelMessage) -> str:
    """The readable text of a ``ModelMessage``, for search: prompts (the text items of a
    multimodal prompt) and model text."""
    texts: list[str] = []
    for part in message.parts:
        if not isinstance(part, TextPart | SystemPromptPart | UserPromptPart):
            continue
        if isinstance(part.content, str):
            texts.append(part.content)
        elif isinstance(part, UserPromptPart):  # a sequence: text, images, documents...
            texts.extend(item for item in part.content if isinstance(item, str))
    return "\n".join(texts)


def history_ops(conversation_id: str, messages: Sequence[ModelMessage]) -> list[Add]:
    """The ``Add`` ops that store ``messages`` in the conversation, in order."""
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")
    return [
        Add(
            conversation_id=conversation_id,
            role=message_role(message),
            content=item_content(item, ITEM_TYPE, message_text(message)),
        )
        for message, item in zip(messages, dumped, strict=True)
    ]


def save_history(
    pipeline: Pipeline, conversation_id: str, messages: Sequence[ModelMessage]
) -> list[PersistResult]:
    """Append ``messages`` (say ``result.new_messages()``) to the conversation, in one
    transaction."""
    if not messages:
        return []
    return pipeline.persist_many(history_ops(conversation_id, messages))


def as_model_messages(messages: Sequence[Message]) -> list[ModelMessage]:
    """The ``ModelMessage`` list stored in ``messages``; a message written another way
    (``pipeline.persist``) reads as a user prompt, a system prompt, or (``assistant``,
    and ``tool``: a tool return needs the call it answers) a model text response."""
    items: list[Any] = []
    for message in messages:
        item = stored_item(message, ITEM_TYPE)
        if item is not None:
            items.append(item)
            continue
        text = message.text
        if message.role == "user":
            items.append(ModelRequest(parts=[UserPromptPart(content=text)]))
        elif message.role == "system":
            items.append(ModelRequest(parts=[SystemPromptPart(content=text)]))
        else:
            items.append(ModelResponse(parts=[TextPart(content=text)]))
    loaded: list[ModelMessage] = ModelMessagesTypeAdapter.validate_python(items)
    return loaded


def load_history(pipeline: Pipeline, conversation_id: str) -> list[ModelMessage]:
    """The conversation as a ``message_history`` for ``agent.run``, oldest first: its
    :meth:`context <anchorline.Pipeline.context>`, so after a compaction, the summary
    then the messages it keeps (``pipeline.messages`` still holds them all)."""
    loaded: list[ModelMessage] = []
    for message in pipeline.context(conversation_id):
        if message.role != COMPACTION_ROLE:
            loaded.extend(as_model_messages([message]))
            continue
        blocks = message.content if isinstance(message.content, list) else []
        items = [
            block["item"]
            for block in blocks
            if block.get("type") == ITEM_TYPE and isinstance(block.get("item"), dict)
        ]
        if items:
            loaded.extend(ModelMessagesTypeAdapter.validate_python(items))
        elif text := message.text:
            at = datetime.fromtimestamp(message.created_at / 1000, tz=UTC)
            loaded.append(ModelRequest(parts=[SystemPromptPart(content=text, timestamp=at)]))
    return loaded


def _tool_results(message: ModelMessage) -> set[str]:
    """The ids of the tool calls ``message`` answers."""
    if not isinstance(message, ModelRequest):
        return set()
    return {
        part.tool_call_id
        for part in message.parts
        if isinstance(part, ToolReturnPart)
        or (isinstance(part, RetryPromptPart) and part.tool_name is not None)
    }


def _tool_calls(message: ModelMessage) -> set[str]:
    """The ids of the tool calls ``message`` makes."""
    if not isinstance(message, ModelResponse):
        return set()
    return {part.tool_call_id for part in message.parts if isinstance(part, ToolCallPart)}


def keep_tool_calls(pipeline: Pipeline, conversation_id: str, first_kept_seq: int) -> int:
    """``first_kept_seq``, moved back to the message that makes the tool calls the first
    kept message answers: a tool result without its call is refused by model providers.
    Unchanged when the first kept message answers no call (or its calls are not found)."""
    if type(first_kept_seq) is not int or first_kept_seq < 1:
        return first_kept_seq  # Pipeline.compact says what is wrong with it
    head = pipeline.messages(conversation_id, after_seq=first_kept_seq - 1, limit=1)
    if not head:
        return first_kept_seq
    needed = _tool_results(as_model_messages(head)[0])
    if not needed:
        return first_kept_seq
    earlier = [m for m in pipeline.messages(conversation_id) if m.seq < head[0].seq]
    for stored in reversed(earlier):
        [message] = as_model_messages([stored])
        needed = (needed | _tool_results(message)) - _tool_calls(message)
        if not needed:
            return stored.seq
    return first_kept_seq


def compact_history(
    pipeline: Pipeline,
    conversation_id: str,
    summary: str | Sequence[ModelMessage],
    first_kept_seq: int,
) -> Compacted:
    """Record ``summary`` as standing in for every message before ``first_kept_seq``
    (:meth:`Pipeline.compact <anchorline.Pipeline.compact>`): a text, loaded back as a
    system prompt, or ``ModelMessage`` objects, loaded back as they are.

    When the message at ``first_kept_seq`` returns tool results, the compaction keeps
    from the response that made those calls instead (:func:`keep_tool_calls`); the
    compaction's ``metadata["first_kept_seq"]`` says where it starts."""
    first_kept_seq = keep_tool_calls(pipeline, conversation_id, first_kept_seq)
    if isinstance(summary, str):
        return pipeline.compact(conversation_id, summary, first_kept_seq)
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(list(summary), mode="json")
    blocks = [{"type": ITEM_TYPE, "item": item} for item in dumped]
    return pipeline.compact(conversation_id, blocks, first_kept_seq)


__all__ = [
    "ITEM_TYPE",
    "as_model_messages",
    "compact_history",
    "history_ops",
    "keep_tool_calls",
    "load_history",
    "message_role",
    "message_text",
    "save_history",
]
