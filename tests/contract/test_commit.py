"""When a lone write is committed, on every store: a wrapper can still undo it.

A store may commit a call's one write as it makes it (PostgreSQL does, in one
round trip) only when nothing can fail after it; a wrapper on ``persist`` runs
after the terminal, so with one registered the write waits for the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from anchorline import Add, Pipeline, Reserve, UpdateContent, hookimpl
from anchorline.ops import PersistOp


class _VetoAfter:
    """Refuses every op once the rest of the chain, terminal included, has written it."""

    @hookimpl(wrapper=True)
    def persist(self, op: Any, context: Any) -> Generator[None, Any, Any]:
        yield
        raise PermissionError(f"vetoed {op.kind} after the terminal wrote it")


def _add(pipeline: Pipeline) -> PersistOp:
    return Add(conversation_id="c", role="user", content="vetoed")


def _reserve(pipeline: Pipeline) -> PersistOp:
    return Reserve(conversation_id="c", role="assistant")


def _final(pipeline: Pipeline) -> PersistOp:
    reserved = pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    return UpdateContent(message_id=reserved.message.id, content="vetoed")


def _partial(pipeline: Pipeline) -> PersistOp:
    reserved = pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    return UpdateContent(message_id=reserved.message.id, content="vetoed", final=False)


@pytest.mark.parametrize(
    "make", [_add, _reserve, _final, _partial], ids=["add", "reserve", "final", "partial"]
)
def test_a_wrapper_failing_after_the_terminal_undoes_a_lone_write(
    pipeline: Pipeline, make: Callable[[Pipeline], PersistOp]
) -> None:
    pipeline.persist(Add(conversation_id="c", role="user", content="kept"))
    op = make(pipeline)
    before = pipeline.messages("c")
    feed = pipeline.changes()
    veto = _VetoAfter()
    pipeline.plugin_manager.register(veto)
    with pytest.raises(PermissionError, match="vetoed"):
        pipeline.persist(op)
    pipeline.plugin_manager.unregister(veto)
    assert pipeline.messages("c") == before
    assert pipeline.changes() == feed
    # No seq was taken by the undone write: the next message gets the next one.
    after = pipeline.persist(Add(conversation_id="c", role="user", content="next"))
    assert after.message.seq == max(m.seq for m in before) + 1


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_with_a_wrapper_the_write_is_committed_only_after_it_returns(
    store: str, request: pytest.FixtureRequest, db_path: str
) -> None:
    location = request.getfixturevalue("postgres_url") if store == "postgres" else db_path
    seen: list[Any] = []
    with (
        Pipeline.open(location, index="none", load_entrypoints=False) as pipeline,
        Pipeline.open(location, index="none", load_entrypoints=False) as reader,
    ):

        class LooksFromElsewhere:
            @hookimpl(wrapper=True)
            def persist(self, op: Any, context: Any) -> Generator[None, Any, Any]:
                result = yield
                seen.append(reader.get(result.message.id))  # another connection's view
                return result

        pipeline.plugin_manager.register(LooksFromElsewhere())
        added = pipeline.persist(Add(conversation_id="c", role="user", content="1"))
        assert seen == [None]
        assert reader.get(added.message.id) == added.message
