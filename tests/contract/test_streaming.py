"""The streaming helper: reserve on entry, debounced partials, final or interrupted on exit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anchorline import (
    Conflict,
    Context,
    InvalidOp,
    Limits,
    PersistOp,
    PersistResult,
    Pipeline,
    Reserve,
    UpdateContent,
    hookimpl,
)
from anchorline.streaming import StreamState

from ..support.stores import TERMINALS, open_pipeline


class Writes:
    """Records every op that goes through the chain."""

    def __init__(self) -> None:
        self.ops: list[PersistOp] = []

    @hookimpl(wrapper=True)
    def persist(
        self, op: PersistOp, context: Context
    ) -> Generator[None, PersistResult, PersistResult]:
        self.ops.append(op)
        return (yield)

    def kinds(self) -> list[str]:
        return [
            op.kind if op.kind != "update_content" else f"content(final={op.final})"
            for op in self.ops
        ]  # type: ignore[attr-defined]


@pytest.fixture
def writes(pipeline: Pipeline) -> Writes:
    recorder = Writes()
    pipeline.plugin_manager.register(recorder, name="writes")
    return recorder


def test_the_id_is_known_on_entry_and_the_final_content_lands_on_exit(
    pipeline: Pipeline, writes: Writes
) -> None:
    with pipeline.stream("c", flush_interval=3600) as s:
        placeholder = pipeline.get(s.message_id)
        assert (
            placeholder is not None
            and placeholder.status == "reserved"
            and placeholder.content == []
        )
        for token in ("Hel", "lo", ", world"):
            s.append(token)
        assert s.content == "Hello, world"
    stored = pipeline.get(s.message_id)
    assert stored is not None and stored.status == "complete"
    assert stored.content == "Hello, world"
    assert writes.kinds() == ["reserve", "content(final=True)"]


def written_directly(pipeline: Pipeline, content: Any, *, final: bool = True) -> Any:
    """What ``UpdateContent(content=...)`` stores for a fresh message."""
    mid = pipeline.persist(Reserve(conversation_id="direct", role="assistant")).message.id
    return pipeline.persist(
        UpdateContent(message_id=mid, content=content, final=final)
    ).message.content


@pytest.mark.parametrize("write", ["partial", "final", "interrupted"])
def test_streamed_text_is_stored_as_update_content_stores_the_same_text(
    pipeline: Pipeline, write: str
) -> None:
    tokens = ("Hel", "lo", "!")
    with contextlib.suppress(TimeoutError), pipeline.stream("c", flush_interval=3600) as s:
        for token in tokens:
            s.append(token)
        if write == "partial":
            s.flush()
            partial = pipeline.get(s.message_id)
        elif write == "interrupted":
            raise TimeoutError("the model stopped")
    stored = partial if write == "partial" else pipeline.get(s.message_id)
    assert stored is not None
    assert stored.content == written_directly(pipeline, "Hello!", final=write != "partial")
    assert stored.content == "Hello!"


def test_a_stream_that_appends_blocks_is_stored_as_blocks(pipeline: Pipeline) -> None:
    tool = {"type": "tool_use", "id": "t1", "name": "maps", "input": {"q": "Lisbon"}}
    with pipeline.stream("c", flush_interval=3600) as s:
        s.append("Let me ")
        s.append("check.")
        s.flush()
        assert pipeline.get(s.message_id).content == "Let me check."  # type: ignore[union-attr]
        s.append(tool)
        s.append("Found ")
        s.append("it.")
        s.flush()
        partial = pipeline.get(s.message_id)
    blocks = [
        {"type": "text", "text": "Let me check."},
        tool,
        {"type": "text", "text": "Found it."},
    ]
    assert partial is not None and partial.content == blocks
    assert pipeline.get(s.message_id).content == blocks  # type: ignore[union-attr]
    assert written_directly(pipeline, blocks) == blocks


def test_partials_are_debounced_not_one_write_per_token(
    pipeline: Pipeline, writes: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("anchorline.streaming.time.monotonic", lambda: now[0])
    with pipeline.stream("c", flush_interval=1.0) as s:
        for second in range(3):
            for _ in range(50):  # 50 tokens within one second
                s.append("x")
                now[0] += 0.019
            now[0] = 1000.0 + second + 1
        s.append("end")  # a second after the last flush: this one flushes
        mid = pipeline.get(s.message_id)
        assert mid is not None and mid.status == "reserved"
    partials = [op for op in writes.ops if op.kind == "update_content" and not op.final]  # type: ignore[attr-defined]
    assert 2 <= len(partials) <= 4  # about one per second, for 151 appends
    assert pipeline.get(s.message_id).content == "x" * 150 + "end"  # type: ignore[union-attr]


def test_an_exception_keeps_what_was_streamed_marked_interrupted(pipeline: Pipeline) -> None:
    with pytest.raises(TimeoutError), pipeline.stream("c", flush_interval=3600) as s:
        s.append("partial answ")
        raise TimeoutError("model timed out")
    stored = pipeline.get(s.message_id)
    assert stored is not None and stored.status == "complete"
    assert stored.content == "partial answ"
    assert stored.metadata == {"interrupted": True, "error": "TimeoutError"}


def test_an_exception_before_any_content_deletes_the_placeholder(pipeline: Pipeline) -> None:
    with pytest.raises(KeyboardInterrupt), pipeline.stream("c") as s:
        raise KeyboardInterrupt
    assert pipeline.get(s.message_id) is None
    assert pipeline.messages("c") == []


def test_blocks_and_set_content(pipeline: Pipeline) -> None:
    with pipeline.stream("c", role="assistant", metadata={"model": "m"}, flush_interval=0) as s:
        s.append("Let me check.")
        s.append({"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x"}})
        s.append("Done")
        s.set_content("Replaced entirely")
        s.append(" and extended")
    stored = pipeline.get(s.message_id)
    assert stored is not None
    assert stored.content == "Replaced entirely and extended"
    assert stored.metadata == {"model": "m"}


def test_a_bad_delta_is_refused_and_the_stream_still_finishes(pipeline: Pipeline) -> None:
    with pipeline.stream("c") as s:
        s.append("ok")
        with pytest.raises(InvalidOp, match="delta"):
            s.append(42)  # type: ignore[arg-type]
    assert pipeline.get(s.message_id).status == "complete"  # type: ignore[union-attr]


def test_flush_writes_the_partial_now(pipeline: Pipeline) -> None:
    with pipeline.stream("c", flush_interval=3600) as s:
        s.append("so far")
        s.flush()
        stored = pipeline.get(s.message_id)
        assert stored is not None and stored.status == "reserved"
        assert stored.content == "so far"


def test_a_retried_stream_of_an_unfinished_turn_resumes_its_message(pipeline: Pipeline) -> None:
    # What a stream had written when its process died: the placeholder and a flush.
    message_id = pipeline.persist(
        Reserve(conversation_id="c", role="assistant", client_message_id="turn-7")
    ).message.id
    pipeline.persist(UpdateContent(message_id=message_id, content="a", final=False))
    with pipeline.stream("c", client_message_id="turn-7") as again:
        assert again.message_id == message_id and not again.complete
        assert again.content == "a"  # resumed, not emptied
        again.append("b")
    stored = pipeline.get(message_id)
    assert stored is not None and stored.content == "ab" and stored.status == "complete"


def test_a_retried_stream_of_a_finished_turn_keeps_its_answer_and_writes_nothing(
    pipeline: Pipeline,
) -> None:
    with pipeline.stream("c", client_message_id="turn-7") as first:
        first.append("answer")
    stored = pipeline.get(first.message_id)
    feed = pipeline.changes()
    with pipeline.stream("c", client_message_id="turn-7") as again:
        assert again.complete and again.message == stored
        for write in (lambda: again.append("answer"), lambda: again.set_content("x"),
                      again.flush):  # fmt: skip
            with pytest.raises(Conflict, match=r"already complete.*s\.complete"):
                write()
    with pytest.raises(RuntimeError, match="model failed"):
        with pipeline.stream("c", client_message_id="turn-7") as failed:
            assert failed.complete
            raise RuntimeError("model failed")
    assert pipeline.messages("c") == [stored]
    assert pipeline.changes() == feed  # nothing written: no update, no interrupted mark


def test_a_stream_overtaken_by_its_retry_never_rewrites_the_finished_answer(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # The client timed out and retried the turn while the first attempt still streamed.
    caplog.set_level(logging.WARNING, logger="anchorline")
    with pytest.raises(Conflict, match="changed by another writer") as refused:
        with pipeline.stream("c", client_message_id="turn-7", flush_interval=0) as first:
            first.append("A1 ")
            first.append("A2 ")
            with pipeline.stream("c", client_message_id="turn-7", flush_interval=0) as retry:
                assert retry.content == "A1 A2 " and not retry.complete
                retry.append("B1 ")
                retry.append("B2 ")
            first.append("A3 ")  # the retry finished the message: refused
    assert first.message_id in str(refused.value)
    stored = pipeline.get(first.message_id)
    assert stored is not None and stored.status == "complete"
    assert stored.content == "A1 A2 B1 B2 " and stored.metadata == {}
    # The first attempt's failed clean-up is one line, not a traceback.
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "could not finalise interrupted stream" in caplog.records[0].getMessage()


def test_a_final_write_after_another_writer_wrote_is_refused_and_the_other_stream_wins(
    pipeline: Pipeline,
) -> None:
    with pipeline.stream("c", client_message_id="turn-7", flush_interval=0) as first:
        first.append("A1 ")
        with pytest.raises(Conflict, match="changed by another writer"):
            with pipeline.stream("c", client_message_id="turn-7", flush_interval=3600) as retry:
                retry.append("B1 ")
                first.append("A2 ")  # written after the retry last saw the message
        assert pipeline.get(first.message_id).status == "reserved"  # type: ignore[union-attr]
        first.append("A3 ")
    stored = pipeline.get(first.message_id)
    assert stored is not None and stored.status == "complete"
    assert stored.content == "A1 A2 A3 " and stored.metadata == {}


@pytest.fixture(params=TERMINALS)
def limited(request: pytest.FixtureRequest, db_path: str) -> Iterator[Pipeline]:
    """A pipeline on each store that refuses content over 100 bytes."""
    limits = Limits(max_content_bytes=100)
    with open_pipeline(request.param, request, db_path, limits=limits) as opened:
        yield opened


@pytest.mark.parametrize(
    ("flush_interval", "flush", "kept"),
    [(0, False, "x" * 80), (3600, True, "x" * 80), (3600, False, None)],
    ids=["each-token-flushed", "flushed-once", "never-flushed"],
)
def test_content_over_the_limit_keeps_what_was_written_marked_interrupted(
    limited: Pipeline,
    caplog: pytest.LogCaptureFixture,
    flush_interval: float,
    flush: bool,
    kept: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="anchorline")
    with pytest.raises(InvalidOp, match="max_content_bytes"):
        with limited.stream("c", flush_interval=flush_interval) as s:
            for _ in range(2):
                s.append("x" * 40)
            if flush:
                s.flush()
            s.append("y" * 40)  # 122 bytes as JSON: over the limit
    stored = limited.get(s.message_id)
    if kept is None:  # nothing was written: the empty placeholder is gone
        assert stored is None and limited.messages("c") == []
    else:
        assert stored is not None and stored.status == "complete"
        assert stored.content == kept
        assert stored.metadata == {"interrupted": True, "error": "InvalidOp"}
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


def test_using_the_handle_outside_with_is_an_error(pipeline: Pipeline) -> None:
    handle: Any = pipeline.stream("c")
    with pytest.raises(RuntimeError, match="context manager"):
        handle.append("x")


def _one_delta_at_a_time(start: Any, events: list[Any]) -> Any:
    """The content a stream must produce: each delta applied as it arrives."""
    content = start if isinstance(start, str) else [dict(b) for b in start]
    for event in events:
        if isinstance(event, str):
            if isinstance(content, str):
                content += event
            elif content and content[-1].get("type") == "text":
                content[-1] = {**content[-1], "text": content[-1]["text"] + event}
            else:
                content.append({"type": "text", "text": event})
        else:
            if isinstance(content, str):
                content = [{"type": "text", "text": content}] if content else []
            content.append(dict(event))
    return content


_blocks = st.fixed_dictionaries({"type": st.sampled_from(["image", "tool_use"]), "id": st.text()})


@given(
    start=st.one_of(st.text(max_size=5), st.just([])),
    events=st.lists(st.one_of(st.text(max_size=4), _blocks), max_size=12),
    peek_every=st.integers(min_value=1, max_value=5),
)
def test_text_deltas_join_into_the_same_content_as_one_at_a_time(
    start: Any, events: list[Any], peek_every: int
) -> None:
    state = StreamState("m", flush_interval=3600, resume_from=start or None)
    for i, event in enumerate(events, 1):
        state.append(event)
        if i % peek_every == 0:  # reading the content midway must not change it
            assert state.content == _one_delta_at_a_time(start or "", events[:i])
    assert state.content == _one_delta_at_a_time(start or "", events)
    assert state.finish()[0].content == state.content
