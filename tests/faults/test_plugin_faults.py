"""Faulty plugins: a failing wrapper undoes the whole unit, a failing observer blocks nothing."""

from __future__ import annotations

import logging
from collections.abc import Generator

import pytest

from anchorline import (
    Add,
    ContentUpdated,
    Context,
    PersistOp,
    PersistResult,
    Pipeline,
    PluginError,
    hookimpl,
)


class FailOnThird:
    def __init__(self) -> None:
        self.seen = 0

    @hookimpl(wrapper=True)
    def persist(
        self, op: PersistOp, context: Context
    ) -> Generator[None, PersistResult, PersistResult]:
        result = yield
        self.seen += 1
        if self.seen == 3:
            raise RuntimeError("plugin bug after the terminal wrote op 3")
        return result


def test_a_wrapper_failing_mid_batch_leaves_nothing_of_the_batch(pipeline: Pipeline) -> None:
    pipeline.plugin_manager.register(FailOnThird(), name="fail-on-third")
    with pytest.raises(RuntimeError, match="op 3"):
        pipeline.persist_many(
            [Add(conversation_id="c", role="user", content=str(i)) for i in range(5)]
        )
    assert pipeline.messages("c") == []


def test_a_failing_observer_neither_fails_the_op_nor_starves_the_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Crashy:
        @hookimpl(tryfirst=True)
        def after_persist(self) -> None:
            raise ZeroDivisionError("observer bug")

    with (
        Pipeline.open(
            ":memory:",
            index=":memory:",
            index_sync=True,
            plugins=[Crashy()],
            load_entrypoints=False,
        ) as pipeline,
        caplog.at_level(logging.ERROR, logger="anchorline"),
    ):
        mid = pipeline.persist(
            Add(conversation_id="c", role="user", content="indexed anyway")
        ).message.id
        assert [h.message.id for h in pipeline.search("indexed anyway")] == [mid]
    assert "observer bug" in caplog.text


def test_a_plugin_answering_with_the_wrong_message_is_caught(pipeline: Pipeline) -> None:
    class Confused:
        @hookimpl
        def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
            if op.kind == "update_content":
                return ContentUpdated(message=context.pipeline.messages("c")[0])
            return None

    first = pipeline.persist(Add(conversation_id="c", role="user", content="a")).message.id
    second = pipeline.persist(Add(conversation_id="c", role="user", content="b")).message.id
    pipeline.plugin_manager.register(Confused(), name="confused")
    with pytest.raises(PluginError, match=f"for message '{second}' with message '{first}'"):
        pipeline.persist({"kind": "update_content", "message_id": second, "content": "c"})
