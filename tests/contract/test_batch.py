"""persist_many as one batch: the edge cases of writing many ops at once, on every store,
and the ``persist_batch`` hook that plugins opt into."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from anchorline import Add, Pipeline, Reserve, UpdateContent, hookimpl
from anchorline.errors import Conflict, InvalidOp, PluginError
from anchorline.memory.interface import Store
from anchorline.ops import PersistOp
from anchorline.results import Added, Conversation, PersistResult


def test_a_repeated_client_id_inside_one_batch_names_the_first_message(
    pipeline: Pipeline,
) -> None:
    first, second, other = pipeline.persist_many(
        [
            Add(conversation_id="c", role="user", content="hi", client_message_id="k"),
            Add(conversation_id="c", role="user", content="hi", client_message_id="k"),
            Add(conversation_id="c", role="user", content="next"),
        ]
    )
    assert isinstance(first, Added) and isinstance(second, Added)
    assert not first.deduplicated and second.deduplicated
    assert second.message == first.message
    assert [m.content for m in pipeline.messages("c")] == ["hi", "next"]
    assert other.message.created_at > first.message.created_at


def test_a_repeated_client_id_with_other_content_fails_the_batch_at_that_op(
    pipeline: Pipeline,
) -> None:
    with pytest.raises(Conflict) as info:
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="user", content="a"),
                Add(conversation_id="c", role="user", content="hi", client_message_id="k"),
                Add(conversation_id="c", role="user", content="bye", client_message_id="k"),
                Add(conversation_id="c", role="user", content="z"),
            ]
        )
    assert info.value.op_index == 2
    assert pipeline.messages("c") == []


def test_a_bad_op_in_the_middle_names_its_index_and_nothing_is_written(
    pipeline: Pipeline,
) -> None:
    ops: list[Any] = [
        Add(conversation_id="c", role="user", content="a"),
        {"kind": "add", "conversation_id": "c", "role": "narrator", "content": "b"},
        Add(conversation_id="c", role="user", content="c"),
    ]
    with pytest.raises(InvalidOp) as info:
        pipeline.persist_many(ops)
    assert info.value.op_index == 1
    assert "role" in str(info.value)
    assert pipeline.messages("c") == []


def test_a_taken_id_in_a_run_of_adds_names_its_index_and_nothing_is_written(
    pipeline: Pipeline,
) -> None:
    pipeline.persist(Add(conversation_id="old", role="user", content="x", message_id="m1"))
    with pytest.raises(Conflict) as info:
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="user", content="a"),
                Add(conversation_id="c", role="user", content="b"),
                Add(conversation_id="c", role="user", content="c", message_id="m1"),
                Add(conversation_id="c", role="user", content="d"),
            ]
        )
    assert info.value.op_index == 2
    assert pipeline.messages("c") == []
    assert [m.content for m in pipeline.messages("old")] == ["x"]


def test_an_add_in_a_batch_completes_its_reserved_placeholder(pipeline: Pipeline) -> None:
    reserved = pipeline.persist(
        Reserve(conversation_id="c", role="assistant", client_message_id="turn-1")
    )
    before, done = pipeline.persist_many(
        [
            Add(conversation_id="c", role="user", content="question"),
            Add(conversation_id="c", role="assistant", content="answer",
                client_message_id="turn-1", metadata={"model": "m"}),
        ]
    )  # fmt: skip
    assert isinstance(done, Added) and not done.deduplicated
    assert done.message.id == reserved.message.id
    assert done.message.status == "complete"
    assert done.message.metadata == {"model": "m"}
    stored = pipeline.get(reserved.message.id)
    assert stored == done.message
    assert pipeline.get(before.message.id) == before.message


def test_a_placeholder_reserved_earlier_in_the_batch_is_completed_by_a_later_add(
    pipeline: Pipeline,
) -> None:
    results = pipeline.persist_many(
        [
            Reserve(conversation_id="c", role="assistant", client_message_id="t"),
            Add(conversation_id="c", role="assistant", content="a", client_message_id="t"),
            Add(conversation_id="c", role="assistant", content="a", client_message_id="t"),
        ]
    )
    ids = {r.message.id for r in results}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert [r.deduplicated for r in results] == [False, False, True]  # type: ignore[union-attr]
    [stored] = pipeline.messages("c")
    assert (stored.content, stored.status) == ("a", "complete")


def test_each_result_of_a_batch_is_the_message_as_stored(pipeline: Pipeline) -> None:
    results = pipeline.persist_many(
        [
            Add(conversation_id="c", role="user", content=f"m{i}", metadata={"i": i})
            for i in range(20)
        ]
        + [Reserve(conversation_id="c", role="assistant", message_id="r")]
        + [Add(conversation_id="c", role="user", content="after")]
    )
    assert pipeline.messages("c") == [r.message for r in results]  # type: ignore[union-attr]


# --- the persist_batch hook ---------------------------------------------------------


class _Counting:
    """Counts what each write hook was called with."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.batches: list[int] = []

    @hookimpl(wrapper=True)
    def persist(self, op: PersistOp, context: object) -> Generator[None, Any, Any]:
        self.ops.append(op.kind)
        return (yield)

    @hookimpl(wrapper=True)
    def persist_batch(self, ops: list[PersistOp], context: object) -> Generator[None, Any, Any]:
        self.batches.append(len(ops))
        return (yield)


def _three() -> list[PersistOp]:
    return [
        Add(conversation_id="c", role="user", content="a"),
        Reserve(conversation_id="c", role="assistant", message_id="r"),
        UpdateContent(message_id="r", content="b"),
    ]


def test_a_plugin_that_implements_persist_batch_gets_the_batch_in_one_call(
    tmp_path: Path,
) -> None:
    counting = _Counting()
    with Pipeline.open(str(tmp_path / "a.db"), plugins=[counting]) as pipeline:
        results = pipeline.persist_many(_three())
        pipeline.persist(Add(conversation_id="c", role="user", content="one"))
        assert [r.kind for r in results] == ["add", "reserve", "update_content"]
        assert [m.content for m in pipeline.messages("c")] == ["a", "b", "one"]
    assert counting.batches == [3]
    assert counting.ops == ["add"]  # only the single persist


class _PersistOnly:
    def __init__(self) -> None:
        self.ops: list[str] = []

    @hookimpl(wrapper=True)
    def persist(self, op: PersistOp, context: object) -> Generator[None, Any, Any]:
        self.ops.append(op.kind)
        return (yield)


def test_a_plugin_that_only_implements_persist_still_sees_every_op_of_a_batch(
    tmp_path: Path,
) -> None:
    # It is the only thing holding the batch to one op at a time: with a batch hook
    # alongside, it still sees every op.
    only, counting = _PersistOnly(), _Counting()
    with Pipeline.open(str(tmp_path / "a.db"), plugins=[only, counting]) as pipeline:
        pipeline.persist_many(_three())
    assert only.ops == ["add", "reserve", "update_content"]
    assert counting.batches == []


class _ShortAnswer:
    @hookimpl
    def persist(self, op: PersistOp, context: object) -> None:
        return None

    @hookimpl
    def persist_batch(self, ops: list[PersistOp], context: object) -> list[PersistResult]:
        return []


def test_a_batch_answered_with_too_few_results_is_a_plugin_error(tmp_path: Path) -> None:
    with Pipeline.open(str(tmp_path / "a.db"), plugins=[_ShortAnswer()]) as pipeline:
        with pytest.raises(PluginError, match=r"persist_batch: plugin '_ShortAnswer' returned"
                           r" 0 results for 3 ops"):  # fmt: skip
            pipeline.persist_many(_three())
        assert pipeline.messages("c") == []


@pytest.fixture(params=("sqlite", "postgres"))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store of each kind that writes a run of adds at once."""
    from anchorline.memory.sqlite.store import SQLiteStore

    if request.param == "postgres":
        from anchorline.memory.postgres.store import PostgresStore

        opened: Store = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        opened = SQLiteStore(str(tmp_path / "a.db"))
    try:
        yield opened
    finally:
        opened.close()


def test_a_refused_run_of_adds_leaves_the_rest_of_its_transaction_as_it_was(
    store: Store,
) -> None:
    first = store.begin()
    first.add(Add(conversation_id="c", role="user", content="x"), message_id="taken", now=1)
    first.commit()
    tx = store.begin()
    tx.add(Add(conversation_id="c", role="user", content="kept"), message_id="k", now=10)
    run = [
        Add(conversation_id="c", role="user", content="a"),
        Add(conversation_id="c", role="user", content="b", message_id="taken"),
    ]
    with pytest.raises(Conflict) as info:
        tx.add_many(run, message_ids=["a1", "taken"], nows=[11, 12])
    assert info.value.op_index == 1
    tx.commit()
    assert [m.id for m in store.list_messages("c", None)] == ["taken", "k"]
    assert [(c.kind, c.message_id) for c in store.changes(0, 10)] == [
        ("add", "taken"),
        ("add", "k"),
    ]


def test_a_run_of_adds_as_the_first_write_of_a_transaction_numbers_and_logs_every_row(
    store: Store,
) -> None:
    tx = store.begin()
    results = tx.add_many(
        [Add(conversation_id=c, role="user", content=c + str(i)) for i, c in enumerate("abab")],
        message_ids=["m0", "m1", "m2", "m3"],
        nows=[1, 2, 3, 4],
    )
    tx.commit()
    assert [(r.message.id, r.message.seq) for r in results] == [
        ("m0", 1),
        ("m1", 1),
        ("m2", 2),
        ("m3", 2),
    ]
    assert [m.content for m in store.list_messages("a", None)] == ["a0", "a2"]
    assert [(c.kind, c.message_id, c.seq) for c in store.changes(0, 10)] == [
        ("add", "m0", 1),
        ("add", "m1", 1),
        ("add", "m2", 2),
        ("add", "m3", 2),
    ]


def test_a_run_of_adds_that_meets_stored_rows_settles_each_and_keeps_seqs_unbroken(
    store: Store,
) -> None:
    tx = store.begin()
    tx.add(Add(conversation_id="c", role="user", content="hi", client_message_id="k"),
           message_id="first", now=1)  # fmt: skip
    tx.reserve(Reserve(conversation_id="c", role="assistant", client_message_id="r"),
               message_id="slot", now=2)  # fmt: skip
    tx.commit()
    tx = store.begin()
    results = tx.add_many(
        [
            Add(conversation_id="c", role="user", content="new"),
            Add(conversation_id="c", role="user", content="hi", client_message_id="k"),
            Add(conversation_id="c", role="assistant", content="done", client_message_id="r"),
            Add(conversation_id="c", role="user", content="last"),
        ],
        message_ids=["n1", "n2", "n3", "n4"],
        nows=[10, 11, 12, 13],
    )
    tx.commit()
    assert [(r.message.id, r.deduplicated) for r in results] == [
        ("n1", False),
        ("first", True),
        ("slot", False),
        ("n4", False),
    ]
    stored = store.list_messages("c", None)
    assert [(m.id, m.seq, m.status) for m in stored] == [
        ("first", 1, "complete"), ("slot", 2, "complete"), ("n1", 3, "complete"),
        ("n4", 4, "complete"),
    ]  # fmt: skip
    # One transaction's rows: all of them, after the earlier commit's.
    assert sorted((c.kind, c.message_id) for c in store.changes(0, 10)[2:]) == [
        ("add", "n1"),
        ("add", "n4"),
        ("add", "slot"),
    ]


def test_a_run_of_adds_continues_each_conversations_seqs_and_counts(store: Store) -> None:
    tx = store.begin()
    tx.add(Add(conversation_id="a", role="user", content="old"), message_id="old", now=1)
    tx.commit()
    tx = store.begin()
    tx.add_many(
        [
            Add(conversation_id="b", role="user", content="b1", parent_id="a"),
            Add(conversation_id="a", role="user", content="a2"),
            Add(conversation_id="b", role="user", content="b2"),
            Add(conversation_id="a", role="user", content="a3"),
        ],
        message_ids=["b1", "a2", "b2", "a3"],
        nows=[10, 11, 12, 13],
    )
    tx.commit()
    assert [(m.id, m.seq) for m in store.list_messages("a", None)] == [
        ("old", 1),
        ("a2", 2),
        ("a3", 3),
    ]
    assert [(m.id, m.seq) for m in store.list_messages("b", None)] == [("b1", 1), ("b2", 2)]
    conversations = {c.id: c for c in store.conversations(None, None, None)}
    assert (conversations["a"].message_count, conversations["a"].last_at) == (3, 13)
    assert conversations["b"] == Conversation(
        id="b", message_count=2, first_at=10, last_at=12, parent_id="a"
    )
    after = store.begin()
    after.add(Add(conversation_id="a", role="user", content="a4"), message_id="a4", now=20)
    after.commit()
    assert store.list_messages("a", None)[-1].seq == 4
