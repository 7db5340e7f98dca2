"""A session for the OpenAI Agents SDK that keeps its items in an Anchorline pipeline.

``AnchorlineSession(session_id, pipeline)`` satisfies ``agents.memory.Session``:
pass it as ``Runner.run(agent, input, session=...)``. Each item is one message
of the conversation ``session_id``, written through the pipeline's hook chain
(so every plugin sees it) and read back exactly as it was given. Install with
``pip install 'anchorline[openai-agents]'``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

try:
    from agents.memory import SessionSettings
    from agents.memory.session import _CompactionSnapshot
    from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "agents":
        raise
    raise ModuleNotFoundError(
        "anchorline.integrations.openai_agents needs the OpenAI Agents SDK:"
        " pip install 'anchorline[openai-agents]'",
        name="agents",
    ) from e

from anchorline.compaction import first_kept_seq
from anchorline.errors import Conflict
from anchorline.ops import COMPACTION_ROLE, ROLES, Add, Compact, Delete
from anchorline.results import Message

from .items import item_content, stored_item

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

    from anchorline.runner import Pipeline

T = TypeVar("T")
_ALL_ROLES = (*sorted(ROLES), COMPACTION_ROLE)

#: The ``type`` of the content block that holds an SDK item, as the SDK gave it.
ITEM_TYPE = "openai_agents.item"

_TOOL_TYPES = frozenset(
    {
        "function_call",
        "function_call_output",
        "computer_call",
        "computer_call_output",
        "file_search_call",
        "web_search_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "custom_tool_call",
        "custom_tool_call_output",
        "code_interpreter_call",
        "image_generation_call",
    }
)


def item_role(item: dict[str, Any]) -> str:
    """The Anchorline role an SDK item is stored under: its own ``role`` when it is a
    message (``developer`` counts as ``system``), ``tool`` for tool calls and their
    outputs, ``assistant`` for anything else the model produced (reasoning, say)."""
    role = item.get("role")
    if role in ("user", "assistant", "system"):
        return cast(str, role)
    if role == "developer":
        return "system"
    if item.get("type") in _TOOL_TYPES:
        return "tool"
    return "assistant"


def item_text(item: dict[str, Any]) -> str:
    """The readable text of an SDK item, for search: message text and tool output."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    output = item.get("output")
    return output if isinstance(output, str) else ""


def as_item(message: Message) -> TResponseInputItem:
    """The SDK item a message holds; a message written another way (``pipeline.persist``)
    reads as a plain message with its role (``tool`` as ``assistant``) and its text."""
    item = stored_item(message, ITEM_TYPE)
    if item is None:
        role = "assistant" if message.role == "tool" else message.role
        item = {"role": role, "content": message.text}
    return cast("TResponseInputItem", item)


def as_items(message: Message) -> list[TResponseInputItem]:
    """The items a message of the context stands for: a compaction's summary items
    (or its text as one user message), else the message's one item."""
    if message.role != COMPACTION_ROLE:
        return [as_item(message)]
    blocks = message.content if isinstance(message.content, list) else []
    items = [
        cast("TResponseInputItem", block["item"])
        for block in blocks
        if block.get("type") == ITEM_TYPE and isinstance(block.get("item"), dict)
    ]
    text = message.text
    if items or not text:
        return items
    return [cast("TResponseInputItem", {"role": "user", "content": text})]


def summary(items: list[TResponseInputItem]) -> list[dict[str, Any]]:
    """A compaction's summary holding ``items``: one ``openai_agents.item`` block each."""
    return [{"type": ITEM_TYPE, "item": item} for item in items]


class AnchorlineSession:
    """The conversation ``session_id`` of ``pipeline`` as an Agents SDK ``Session``.

    Items are written with ``persist_many`` (one transaction per call, each item
    an ``Add`` that plugins see), read back oldest first, popped with a guarded
    ``Delete``, and cleared with :meth:`Pipeline.forget <anchorline.Pipeline.forget>`.
    Each message's content is a ``text`` block with the item's readable text
    (what the index embeds), then a block of type ``openai_agents.item`` holding
    the item exactly as the SDK gave it.

    The pipeline's calls run in a worker thread, so the event loop never waits
    on the database. ``session_settings`` (a ``SessionSettings`` or a dict of its
    fields, checked as the SDK's sessions check it) gives ``get_items`` its default
    limit.
    """

    def __init__(
        self,
        session_id: str,
        pipeline: Pipeline,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self.pipeline = pipeline
        # As the SDK's own sessions do: a dict becomes SessionSettings, and an unknown
        # key raises the SDK's TypeError ("Unknown session settings: ...").
        self.session_settings: SessionSettings | None = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )

    def __repr__(self) -> str:
        return f"AnchorlineSession({self.session_id!r}, {self.pipeline!r})"

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _read(self, limit: int | None) -> list[TResponseInputItem]:
        if limit is None:
            context = self.pipeline.context(self.session_id)
            return [item for message in context for item in as_items(message)]
        if limit == 0:
            return []
        # The newest ``limit`` messages, and the compaction only if they do not fill it;
        # placeholders (an answer still streaming) are not items yet.
        latest = self.pipeline.messages(self.session_id, limit=1, roles=[COMPACTION_ROLE])
        newest = self._newest_complete(limit)
        if not latest:
            return [as_item(message) for message in newest]
        kept = [as_item(m) for m in newest if m.seq >= first_kept_seq(latest[0])]
        return kept if len(kept) == limit else [*as_items(latest[0]), *kept][-limit:]

    def _newest_complete(self, limit: int) -> list[Message]:
        """The newest ``limit`` complete messages (placeholders skipped, not counted)."""
        asked = limit
        while True:
            newest = self.pipeline.messages(self.session_id, limit=asked)
            complete = [m for m in newest if m.status == "complete"]
            if len(complete) >= limit or len(newest) < asked:
                return complete[-limit:]
            asked += limit - len(complete)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first; ``limit`` keeps the newest ``limit``.

        After a compaction, the items are the compaction's (what the SDK's
        compaction returned) followed by those added since: the pipeline's
        :meth:`context <anchorline.Pipeline.context>`. ``pipeline.messages``
        still holds every item ever added.
        """
        limit = resolve_session_limit(limit, self.session_settings)
        return await self._call(self._read, limit)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items``, all in one transaction."""
        if not items:
            return
        ops = [self._op(cast(dict[str, Any], item)) for item in items]
        await self._call(self.pipeline.persist_many, ops)

    def _op(self, item: dict[str, Any]) -> Add:
        content = item_content(item, ITEM_TYPE, item_text(item))
        return Add(conversation_id=self.session_id, role=item_role(item), content=content)

    def _pop(self) -> TResponseInputItem | None:
        while True:
            context = self.pipeline.context(self.session_id)
            if not context:
                return None
            newest = context[-1]
            guard = {newest.id: newest.updated_at}
            if newest.role != COMPACTION_ROLE:
                if self.pipeline.persist(
                    Delete(message_id=newest.id), expect_updated_at=guard
                ).existed:
                    return as_item(newest)
                continue  # popped by another writer meanwhile: try the next one
            # The newest item is the compaction's last: the compaction is written again
            # without it, in one transaction.
            items = as_items(newest)
            if not items:
                return None
            try:
                self.pipeline.persist_many(
                    [
                        Delete(message_id=newest.id),
                        Compact(
                            conversation_id=self.session_id,
                            summary=summary(items[:-1]),
                            first_kept_seq=first_kept_seq(newest),
                        ),
                    ],
                    expect_updated_at=guard,
                )
            except Conflict:
                continue
            return items[-1]

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it; ``None`` when the session is empty."""
        return await self._call(self._pop)

    async def clear_session(self) -> None:
        """Forget every item of the session (and its index points)."""
        await self._call(self.pipeline.forget, self.session_id)

    def _compact(self, items: list[TResponseInputItem]) -> None:
        newest = self.pipeline.messages(self.session_id, limit=1, roles=_ALL_ROLES)
        if not newest:  # nothing to stand in for: the items are simply the session
            if items:
                self.pipeline.persist_many([self._op(cast(dict[str, Any], i)) for i in items])
            return
        self.pipeline.compact(self.session_id, summary(items), newest[0].seq + 1)

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Make ``items`` the whole session, as the SDK's ``OpenAIResponsesCompactionSession``
        asks after ``responses.compact``: recorded as a compaction
        (:meth:`Pipeline.compact <anchorline.Pipeline.compact>`) that stands in for every
        item so far, so the full history stays in the log."""
        await self._call(self._compact, items)
        return True

    async def _get_compaction_snapshot(
        self,
        limit: int,
        *,
        prune_prefix: Callable[[TResponseInputItem], bool] | None = None,
    ) -> _CompactionSnapshot | None:
        """The newest ``limit`` items, for the SDK's bounded automatic compaction (the
        method its SQL sessions have): ``complete`` says whether they are all the items,
        and ``replace_suffix(start, output)`` makes the session's items those before
        ``items[start]`` followed by ``output``, unless the newest items changed
        meanwhile (then it answers ``False`` and writes nothing).

        The replacement is a compaction that stands in for every item so far and
        holds, as its summary, the items it keeps (all of them since the latest
        compaction, not only the ``limit`` read here) and then ``output``; the leading
        ones ``prune_prefix`` accepts (expired items, as ``EncryptedSession`` asks) are
        left out of it. ``pipeline.messages`` keeps every item, as after any compaction.
        """
        read = await self._call(self._read, limit + 1)
        items = read[-limit:] if limit > 0 else []

        async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
            expected = items[start:]
            if not expected:
                return False
            return await self._call(self._replace_suffix, expected, output, prune_prefix)

        return _CompactionSnapshot(items, len(read) <= limit, replace_suffix)

    def _replace_suffix(
        self,
        expected: list[TResponseInputItem],
        output: list[TResponseInputItem],
        prune_prefix: Callable[[TResponseInputItem], bool] | None,
    ) -> bool:
        context = self.pipeline.context(self.session_id)
        current = [item for message in context for item in as_items(message)]
        cut = len(current) - len(expected)
        if cut < 0 or current[cut:] != expected:
            return False
        kept = current[:cut]
        while kept and prune_prefix is not None and prune_prefix(kept[0]):
            kept.pop(0)
        # Past the newest message the context holds: an answer still streaming (a
        # placeholder, not in the context) stays after the compaction.
        first_kept = max(message.seq for message in context) + 1
        self.pipeline.compact(self.session_id, summary([*kept, *output]), first_kept)
        return True


__all__ = [
    "ITEM_TYPE",
    "AnchorlineSession",
    "as_item",
    "as_items",
    "item_role",
    "item_text",
    "summary",
]
