"""Forgetting a conversation, on every store: what is deleted, what plugins see."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from anchorline import Add, AsyncPipeline, Pipeline, Reserve, UpdateContent, hookimpl, parse_op
from anchorline.ops import Forget
from anchorline.results import Forgotten


def _fill(pipeline: Pipeline, conversation_id: str, n: int) -> list[str]:
    ids = [
        pipeline.persist(
            Add(conversation_id=conversation_id, role="user", content=f"m{i}")
        ).message.id
        for i in range(n)
    ]
    ids.append(
        pipeline.persist(Reserve(conversation_id=conversation_id, role="assistant")).message.id
    )
    return ids


def test_forget_deletes_every_message_of_the_conversation_and_no_other(
    pipeline: Pipeline,
) -> None:
    doomed = _fill(pipeline, "c", 3)
    kept = _fill(pipeline, "other", 2)
    result = pipeline.forget("c")
    assert result == Forgotten(conversation_id="c", deleted=4)
    assert pipeline.messages("c") == []
    assert all(pipeline.get(mid) is None for mid in doomed)
    assert [m.id for m in pipeline.messages("other")] == kept


def test_forgetting_an_unknown_or_forgotten_conversation_deletes_nothing(
    pipeline: Pipeline,
) -> None:
    _fill(pipeline, "c", 1)
    pipeline.forget("c")
    assert pipeline.forget("c").deleted == 0
    assert pipeline.forget("never").deleted == 0


def test_a_forgotten_conversation_can_be_written_again(pipeline: Pipeline) -> None:
    pipeline.persist(Add(conversation_id="c", role="user", content="x", client_message_id="k"))
    pipeline.forget("c")
    again = pipeline.persist(
        Add(conversation_id="c", role="user", content="y", client_message_id="k")
    )
    assert not again.deduplicated
    assert [m.content for m in pipeline.messages("c")] == ["y"]


class _Watcher:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []
        self.wrapped: list[Any] = []

    @hookimpl(wrapper=True)
    def persist(self, op: Any, context: Any) -> Generator[None, Any, Any]:
        result = yield
        self.wrapped.append(op)
        return result

    @hookimpl
    def after_persist(self, op: Any, result: Any, context: Any) -> None:
        self.seen.append((op, result))


def test_plugins_see_forget_in_persist_and_after_persist(pipeline: Pipeline) -> None:
    watcher = _Watcher()
    pipeline.plugin_manager.register(watcher)
    _fill(pipeline, "c", 2)
    pipeline.forget("c")
    assert watcher.wrapped[-1] == Forget(conversation_id="c")
    assert watcher.seen[-1] == (
        Forget(conversation_id="c"),
        Forgotten(conversation_id="c", deleted=3),
    )


class _Refuses:
    @hookimpl(wrapper=True)
    def persist(self, op: Any, context: Any) -> Generator[None, Any, Any]:
        result = yield
        if op.kind == "forget":
            raise PermissionError("legal hold")
        return result


def test_a_plugin_that_refuses_after_the_terminal_keeps_every_message(
    pipeline: Pipeline,
) -> None:
    ids = _fill(pipeline, "c", 2)
    pipeline.plugin_manager.register(_Refuses())
    with pytest.raises(PermissionError, match="legal hold"):
        pipeline.forget("c")
    assert [m.id for m in pipeline.messages("c")] == ids


def test_forget_in_a_batch_is_all_or_nothing(pipeline: Pipeline) -> None:
    ids = _fill(pipeline, "c", 2)
    with pytest.raises(Exception, match="unknown"):
        pipeline.persist_many(
            [Forget(conversation_id="c"), UpdateContent(message_id="unknown", content="x")]
        )
    assert [m.id for m in pipeline.messages("c")] == ids
    results = pipeline.persist_many(
        [Forget(conversation_id="c"), Add(conversation_id="c", role="user", content="fresh")]
    )
    assert results[0] == Forgotten(conversation_id="c", deleted=3)
    assert [m.content for m in pipeline.messages("c")] == ["fresh"]


def test_forget_parses_from_its_dict_form(pipeline: Pipeline) -> None:
    _fill(pipeline, "c", 1)
    op = parse_op({"kind": "forget", "conversation_id": "c"})
    assert pipeline.persist(op) == Forgotten(conversation_id="c", deleted=2)


def test_the_async_pipeline_forgets(pipeline: Pipeline) -> None:
    _fill(pipeline, "c", 1)
    with ThreadPoolExecutor(1) as executor:
        front = AsyncPipeline(pipeline, executor)
        assert asyncio.run(front.forget("c")) == Forgotten(conversation_id="c", deleted=2)
    assert pipeline.messages("c") == []
