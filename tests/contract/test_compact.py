"""Compaction, on every store: a summary row in the log, the context a model sees."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from anchorline import Add, InvalidOp, Pipeline, Reserve, UpdateContent, hookimpl, parse_op
from anchorline.compaction import check_target
from anchorline.ops import Compact
from anchorline.results import Compacted, Message


def _say(pipeline: Pipeline, n: int, conversation_id: str = "c") -> list[Message]:
    return [
        pipeline.persist(
            Add(conversation_id=conversation_id, role="user", content=f"turn {i}")
        ).message
        for i in range(n)
    ]


def _contents(messages: list[Message]) -> list[Any]:
    return [m.content for m in messages]


def test_context_is_the_summary_then_the_kept_messages(pipeline: Pipeline) -> None:
    said = _say(pipeline, 5)
    result = pipeline.compact("c", "turns 0 to 2, summed up", said[3].seq)
    assert isinstance(result, Compacted)
    compaction = result.message
    assert compaction.role == "compaction" and compaction.status == "complete"
    assert compaction.content == "turns 0 to 2, summed up"
    assert compaction.metadata == {"first_kept_seq": said[3].seq}
    assert compaction.seq > said[-1].seq  # a row of the log, after what it summarises
    later = _say(pipeline, 1)
    context = pipeline.context("c")
    assert context == [compaction, said[3], said[4], later[0]]


def test_messages_keep_the_whole_history_and_give_compactions_when_asked(
    pipeline: Pipeline,
) -> None:
    said = _say(pipeline, 3)
    compaction = pipeline.compact("c", "summary", said[2].seq).message
    assert pipeline.messages("c") == said
    assert pipeline.messages("c", limit=1) == said[-1:]
    assert pipeline.messages("c", roles=["compaction"]) == [compaction]
    assert pipeline.messages("c", roles=["user", "compaction"]) == [*said, compaction]
    assert pipeline.get(compaction.id) == compaction


def test_without_a_compaction_the_context_is_every_message(pipeline: Pipeline) -> None:
    said = _say(pipeline, 3)
    assert pipeline.context("c") == said
    assert pipeline.context("unknown") == []


def test_the_context_leaves_out_placeholders_streaming_or_abandoned(pipeline: Pipeline) -> None:
    said = _say(pipeline, 2)
    abandoned = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message
    pipeline.persist(UpdateContent(message_id=abandoned.id, content="half an ans", final=False))
    pipeline.persist(Reserve(conversation_id="c", role="assistant"))  # streaming now
    assert pipeline.context("c") == said
    pipeline.persist(UpdateContent(message_id=abandoned.id, content="half an answer"))
    assert [m.id for m in pipeline.context("c")] == [*(m.id for m in said), abandoned.id]


def test_the_latest_compaction_wins_and_an_earlier_context_can_be_rebuilt(
    pipeline: Pipeline,
) -> None:
    said = _say(pipeline, 4)
    first = pipeline.compact("c", [{"type": "text", "text": "0-1"}], said[2].seq).message
    more = _say(pipeline, 2)
    second = pipeline.compact("c", "0-3", more[0].seq, metadata={"model": "m"}).message
    assert second.metadata == {"model": "m", "first_kept_seq": more[0].seq}
    assert pipeline.context("c") == [second, *more]
    assert pipeline.context("c", as_of_seq=second.seq - 1) == [first, said[2], said[3], *more]
    assert pipeline.context("c", as_of_seq=first.seq) == [first, said[2], said[3]]
    assert pipeline.context("c", as_of_seq=said[1].seq) == said[:2]
    with pytest.raises(InvalidOp, match="as_of_seq"):
        pipeline.context("c", as_of_seq=-1)


def test_a_compaction_keeping_everything_or_nothing(pipeline: Pipeline) -> None:
    said = _say(pipeline, 2)
    everything = pipeline.compact("c", "nothing to sum up", 1).message
    assert pipeline.context("c") == [everything, *said]
    nothing = pipeline.compact("c", "all of it", everything.seq + 1).message
    assert pipeline.context("c") == [nothing]


def test_forget_deletes_the_compactions_too(pipeline: Pipeline) -> None:
    said = _say(pipeline, 2)
    pipeline.compact("c", "summary", said[1].seq)
    assert pipeline.forget("c").deleted == 3
    assert pipeline.context("c") == []
    assert pipeline.messages("c", roles=["compaction"]) == []


class _Watcher:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    @hookimpl(wrapper=True)
    def persist(self, op: Any, context: Any) -> Generator[None, Any, Any]:
        result = yield
        if op.kind == "compact" and op.metadata.get("refuse"):
            raise PermissionError("no compaction here")
        return result

    @hookimpl
    def after_persist(self, op: Any, result: Any, context: Any) -> None:
        self.seen.append((op, result))


def test_plugins_see_compact_and_can_refuse_it(pipeline: Pipeline) -> None:
    watcher = _Watcher()
    pipeline.plugin_manager.register(watcher)
    said = _say(pipeline, 2)
    result = pipeline.compact("c", "summary", said[1].seq)
    op, seen = watcher.seen[-1]
    assert op == Compact(conversation_id="c", summary="summary", first_kept_seq=said[1].seq)
    assert seen == result
    with pytest.raises(PermissionError):
        pipeline.compact("c", "again", said[1].seq, metadata={"refuse": True})
    assert pipeline.messages("c", roles=["compaction"]) == [result.message]


def test_compact_parses_from_its_dict_form_and_checks_its_fields(pipeline: Pipeline) -> None:
    said = _say(pipeline, 1)
    op = parse_op(
        {"kind": "compact", "conversation_id": "c", "summary": "s", "first_kept_seq": said[0].seq}
    )
    assert pipeline.persist(op).message.content == "s"
    with pytest.raises(InvalidOp, match="first_kept_seq"):
        parse_op({"kind": "compact", "conversation_id": "c", "summary": "s", "first_kept_seq": -1})
    with pytest.raises(InvalidOp, match="first_kept_seq: must be an integer >= 1"):
        parse_op({"kind": "compact", "conversation_id": "c", "summary": "s", "first_kept_seq": 0})
    with pytest.raises(InvalidOp, match="summary"):
        Compact(conversation_id="c", summary=3, first_kept_seq=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("first_kept_seq", [0, -3])
def test_compact_refuses_a_first_kept_seq_below_1(pipeline: Pipeline, first_kept_seq: int) -> None:
    _say(pipeline, 2)
    with pytest.raises(InvalidOp, match="first_kept_seq: must be an integer >= 1"):
        pipeline.compact("c", "summary", first_kept_seq)
    assert pipeline.messages("c", roles=["compaction"]) == []


def test_compaction_needs_a_conversation_with_messages(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidOp, match="conversation_id: conversation 'nope' has no messages"):
        pipeline.compact("nope", "summary", 1)
    assert [c.id for c in pipeline.conversations()] == []  # nothing was created
    said = _say(pipeline, 1, conversation_id="gone")
    pipeline.forget("gone")
    with pytest.raises(InvalidOp, match="conversation_id: conversation 'gone'"):
        pipeline.compact("gone", "summary", said[0].seq)


def test_compaction_cannot_keep_from_past_the_end(pipeline: Pipeline) -> None:
    said = _say(pipeline, 2)
    last = said[-1].seq
    with pytest.raises(InvalidOp, match=f"first_kept_seq: {last + 2} .* last seq is {last}"):
        pipeline.compact("c", "summary", last + 2)
    assert pipeline.messages("c", roles=["compaction"]) == []
    compaction = pipeline.compact("c", "summary", last + 1).message  # keeps nothing: allowed
    check_target(pipeline, "c", compaction.seq + 1)  # a compaction row counts as the end
