"""The conversation log, on every store: seq, paging by seq, conversations and threads,
the change feed, following it."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest

from anchorline import Add, Delete, InvalidOp, Pipeline, Reserve, UpdateContent

SHARED = ("sqlite", "postgres")  # stores that several processes can write at once


@pytest.fixture(params=SHARED)
def location(request: pytest.FixtureRequest, db_path: str) -> Iterator[str]:
    """A database that other processes can open too."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_url")
    else:
        yield db_path


def _add(pipeline: Pipeline, conversation: str, text: str, role: str = "user") -> int:
    return pipeline.persist(Add(conversation_id=conversation, role=role, content=text)).message.seq


# --- seq ---------------------------------------------------------------------------------


def test_seq_counts_each_conversation_from_one(pipeline: Pipeline) -> None:
    assert [_add(pipeline, "a", "1"), _add(pipeline, "a", "2")] == [1, 2]
    assert _add(pipeline, "b", "1") == 1
    reserved = pipeline.persist(Reserve(conversation_id="a", role="assistant")).message
    assert reserved.seq == 3
    final = pipeline.persist(UpdateContent(message_id=reserved.id, content="done")).message
    assert final.seq == 3  # a write keeps the message's place
    assert [m.seq for m in pipeline.messages("a")] == [1, 2, 3]
    assert pipeline.get(reserved.id).seq == 3  # type: ignore[union-attr]


def test_a_deleted_seq_is_never_handed_out_again(pipeline: Pipeline) -> None:
    _add(pipeline, "c", "1")
    last = pipeline.persist(Add(conversation_id="c", role="user", content="2")).message
    pipeline.persist(Delete(message_id=last.id))
    assert _add(pipeline, "c", "3") == 3
    assert [m.seq for m in pipeline.messages("c")] == [1, 3]


def test_a_deduplicated_add_takes_no_seq(pipeline: Pipeline) -> None:
    op = Add(conversation_id="c", role="user", content="hi", client_message_id="turn-1")
    assert pipeline.persist(op).message.seq == 1
    replay = pipeline.persist(op)
    assert replay.deduplicated and replay.message.seq == 1
    assert _add(pipeline, "c", "next") == 2


def test_an_add_completing_its_placeholder_keeps_the_placeholders_seq(
    pipeline: Pipeline,
) -> None:
    pipeline.persist(Reserve(conversation_id="c", role="assistant", client_message_id="r"))
    _add(pipeline, "c", "in between")
    added = pipeline.persist(
        Add(conversation_id="c", role="assistant", content="answer", client_message_id="r")
    )
    assert (added.message.seq, added.message.status) == (1, "complete")
    assert _add(pipeline, "c", "after") == 3


def _writer(location: str, conversation: str, count: int) -> None:
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        for i in range(count):
            pipeline.persist(Add(conversation_id=conversation, role="user", content=str(i)))


def test_writers_in_several_processes_never_share_a_seq(location: str) -> None:
    Pipeline.open(location, load_entrypoints=False).close()  # the schema, made once
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(location, "busy", 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0, "a writer failed or hung"
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        seqs = [m.seq for m in pipeline.messages("busy")]
    assert len(seqs) == 120
    assert len(set(seqs)) == 120
    assert seqs == sorted(seqs)


# --- paging by seq ------------------------------------------------------------------------


def test_messages_pages_forward_by_seq_and_filters_roles(pipeline: Pipeline) -> None:
    for i in range(1, 8):
        _add(pipeline, "c", str(i), role="user" if i % 2 else "assistant")
    assert [m.content for m in pipeline.messages("c", limit=2)] == ["6", "7"]  # the newest
    page = pipeline.messages("c", after_seq=2, limit=3)
    assert [m.seq for m in page] == [3, 4, 5]
    assert [m.seq for m in pipeline.messages("c", after_seq=page[-1].seq, limit=3)] == [6, 7]
    assert pipeline.messages("c", after_seq=7, limit=3) == []
    assert [m.seq for m in pipeline.messages("c", after_seq=5)] == [6, 7]
    assistant = pipeline.messages("c", roles=["assistant"])
    assert [m.seq for m in assistant] == [2, 4, 6]
    assert [m.seq for m in pipeline.messages("c", roles={"user"}, after_seq=1, limit=2)] == [3, 5]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"after_seq": -1}, "after_seq"),
        ({"roles": ["robot"]}, "roles"),
        ({"roles": "user"}, "roles"),
    ],
)
def test_messages_refuses_bad_paging_arguments(
    pipeline: Pipeline, arguments: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidOp, match=f"^{field}:"):
        pipeline.messages("c", **arguments)  # type: ignore[arg-type]
