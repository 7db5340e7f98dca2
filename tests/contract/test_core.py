"""The terminal contract, on every store: the in-memory double, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest

from anchorline import (
    Add,
    Added,
    Conflict,
    ContentUpdated,
    Delete,
    Deleted,
    MessageNotFound,
    Pipeline,
    Reserve,
    Reserved,
    Update,
    UpdateContent,
    Updated,
)

TEXT = [{"type": "text", "text": "hello"}]


def test_reserve_gives_an_empty_placeholder_with_a_stable_id(pipeline: Pipeline) -> None:
    result = pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    assert isinstance(result, Reserved) and not result.deduplicated
    message = result.message
    assert (message.content, message.status, message.role) == ([], "reserved", "assistant")
    assert pipeline.get(message.id) == message


def test_partial_flush_keeps_reserved_and_final_completes(pipeline: Pipeline) -> None:
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    partial = pipeline.persist(
        UpdateContent(message_id=mid, content=[{"type": "text", "text": "he"}], final=False)
    )
    assert isinstance(partial, ContentUpdated)
    assert partial.message.status == "reserved"
    assert pipeline.get(mid).content == [{"type": "text", "text": "he"}]  # type: ignore[union-attr]
    final = pipeline.persist(UpdateContent(message_id=mid, content=TEXT))
    assert final.message.status == "complete"
    stored = pipeline.get(mid)
    assert stored is not None and stored.content == TEXT and stored.status == "complete"
    assert stored.updated_at > stored.created_at


def test_partial_update_of_a_complete_message_is_a_conflict(pipeline: Pipeline) -> None:
    mid = pipeline.persist(Add(conversation_id="c", role="assistant", content=TEXT)).message.id
    with pytest.raises(Conflict, match="final"):
        pipeline.persist(UpdateContent(message_id=mid, content="late", final=False))
    assert pipeline.get(mid).content == TEXT  # type: ignore[union-attr]


def test_final_update_of_a_complete_message_edits_it(pipeline: Pipeline) -> None:
    mid = pipeline.persist(Add(conversation_id="c", role="user", content="first")).message.id
    pipeline.persist(UpdateContent(message_id=mid, content="second"))
    assert pipeline.get(mid).content == "second"  # type: ignore[union-attr]


def test_add_writes_a_complete_message(pipeline: Pipeline) -> None:
    result = pipeline.persist(
        Add(conversation_id="c", role="user", content="hi", metadata={"k": [1, 2]})
    )
    assert isinstance(result, Added) and not result.deduplicated
    assert result.message.status == "complete"
    assert pipeline.get(result.message.id) == result.message


def test_update_merges_metadata_shallowly(pipeline: Pipeline) -> None:
    mid = pipeline.persist(
        Add(conversation_id="c", role="user", content="hi", metadata={"a": 1, "nested": {"x": 1}})
    ).message.id
    result = pipeline.persist(Update(message_id=mid, metadata={"b": 2, "nested": {"y": 2}}))
    assert isinstance(result, Updated)
    expected = {"a": 1, "b": 2, "nested": {"y": 2}}
    assert result.message.metadata == expected
    assert pipeline.get(mid).metadata == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "op",
    [
        UpdateContent(message_id="missing", content="x"),
        UpdateContent(message_id="missing", content="x", final=False),
        Update(message_id="missing", metadata={"a": 1}),
    ],
)
def test_updates_of_an_unknown_id_raise_message_not_found(pipeline: Pipeline, op: object) -> None:
    with pytest.raises(MessageNotFound) as info:
        pipeline.persist(op)  # type: ignore[arg-type]
    assert isinstance(info.value, LookupError)
    assert "missing" in str(info.value)


def test_delete_reports_whether_the_message_existed(pipeline: Pipeline) -> None:
    mid = pipeline.persist(Add(conversation_id="c", role="user", content="hi")).message.id
    assert pipeline.persist(Delete(message_id=mid)) == Deleted(message_id=mid, existed=True)
    assert pipeline.get(mid) is None
    assert pipeline.persist(Delete(message_id=mid)) == Deleted(message_id=mid, existed=False)


@pytest.mark.parametrize("kind", [Add, Reserve])
def test_reusing_a_message_id_is_a_conflict(pipeline: Pipeline, kind: type) -> None:
    pipeline.persist(Add(conversation_id="c", role="user", content="hi", message_id="m-1"))
    extra = {"content": "again"} if kind is Add else {}
    with pytest.raises(Conflict, match="m-1"):
        pipeline.persist(kind(conversation_id="c", role="user", message_id="m-1", **extra))
    assert [m.content for m in pipeline.messages("c")] == ["hi"]


def test_caller_supplied_ids_are_kept(pipeline: Pipeline) -> None:
    result = pipeline.persist(Reserve(conversation_id="c", role="assistant", message_id="mine"))
    assert result.message.id == "mine"


def test_minted_ids_are_time_ordered_uuid7(pipeline: Pipeline) -> None:
    ids = [
        pipeline.persist(Add(conversation_id="c", role="user", content=str(i))).message.id
        for i in range(5)
    ]
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)


@pytest.mark.parametrize("kind", [Add, Reserve])
def test_client_message_id_makes_add_and_reserve_idempotent(pipeline: Pipeline, kind: type) -> None:
    extra = {"content": "hi"} if kind is Add else {}
    first = pipeline.persist(
        kind(conversation_id="c", role="user", client_message_id="turn-1", **extra)
    )
    again = pipeline.persist(
        kind(conversation_id="c", role="user", client_message_id="turn-1", **extra)
    )
    assert not first.deduplicated and again.deduplicated  # type: ignore[union-attr]
    assert again.message == first.message  # type: ignore[union-attr]
    assert len(pipeline.messages("c")) == 1


def test_the_same_client_message_id_in_another_conversation_is_a_new_message(
    pipeline: Pipeline,
) -> None:
    a = pipeline.persist(Add(conversation_id="a", role="user", content="hi", client_message_id="k"))
    b = pipeline.persist(Add(conversation_id="b", role="user", content="hi", client_message_id="k"))
    assert a.message.id != b.message.id and not b.deduplicated


def test_client_message_id_reused_for_a_different_message_is_a_conflict(pipeline: Pipeline) -> None:
    pipeline.persist(Add(conversation_id="c", role="user", content="hi", client_message_id="k"))
    with pytest.raises(Conflict, match="client_message_id"):
        pipeline.persist(
            Add(conversation_id="c", role="assistant", content="hi", client_message_id="k")
        )
    with pytest.raises(Conflict, match="client_message_id"):
        pipeline.persist(
            Add(conversation_id="c", role="user", content="other", client_message_id="k")
        )
    assert len(pipeline.messages("c")) == 1


def test_a_reserve_retried_after_streaming_returns_the_stored_message(pipeline: Pipeline) -> None:
    first = pipeline.persist(Reserve(conversation_id="c", role="assistant", client_message_id="k"))
    pipeline.persist(UpdateContent(message_id=first.message.id, content="done"))
    again = pipeline.persist(Reserve(conversation_id="c", role="assistant", client_message_id="k"))
    assert again.deduplicated and again.message.content == "done"  # type: ignore[union-attr]


@pytest.mark.parametrize("partial", [None, "half an ans"])
def test_an_add_lands_its_content_in_its_own_reserved_placeholder(
    pipeline: Pipeline, partial: str | None
) -> None:
    placeholder = pipeline.persist(
        Reserve(conversation_id="c", role="assistant", client_message_id="k", metadata={"a": 1})
    ).message
    if partial is not None:
        placeholder = pipeline.persist(
            UpdateContent(message_id=placeholder.id, content=partial, final=False)
        ).message
    # Refused or rolled back, the add leaves the placeholder as it was.
    with pytest.raises(Conflict, match="client_message_id"):
        pipeline.persist(Add(conversation_id="c", role="user", content="x", client_message_id="k"))
    with pytest.raises(MessageNotFound):
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="assistant", content="x", client_message_id="k"),
                UpdateContent(message_id="nope", content="y"),
            ]
        )
    assert pipeline.get(placeholder.id) == placeholder
    added = pipeline.persist(
        Add(
            conversation_id="c",
            role="assistant",
            content=TEXT,
            metadata={"b": 2},
            client_message_id="k",
        )
    )
    assert isinstance(added, Added) and not added.deduplicated
    message = added.message
    assert (message.id, message.created_at) == (placeholder.id, placeholder.created_at)
    assert (message.content, message.status) == (TEXT, "complete")
    assert message.metadata == {"a": 1, "b": 2}
    assert message.updated_at > placeholder.updated_at
    assert pipeline.get(placeholder.id) == message
    # A sweep deletes empty placeholders: this one is complete now, and stays.
    assert pipeline.sweep(older_than=0).total == 0
    assert pipeline.messages("c") == [message]
    # From now on the client id names a complete message, as after any add.
    again = pipeline.persist(
        Add(conversation_id="c", role="assistant", content=TEXT, client_message_id="k")
    )
    assert again.deduplicated and again.message == message
    reserved = pipeline.persist(
        Reserve(conversation_id="c", role="assistant", client_message_id="k")
    )
    assert reserved.deduplicated and reserved.message == message


def test_messages_are_oldest_first_and_limit_keeps_the_newest(pipeline: Pipeline) -> None:
    for i in range(5):
        pipeline.persist(Add(conversation_id="c", role="user", content=str(i)))
    pipeline.persist(Add(conversation_id="other", role="user", content="x"))
    assert [m.content for m in pipeline.messages("c")] == ["0", "1", "2", "3", "4"]
    assert [m.content for m in pipeline.messages("c", limit=2)] == ["3", "4"]
    assert pipeline.messages("c", limit=0) == []
    assert pipeline.messages("nobody") == []


def test_created_at_strictly_increases(pipeline: Pipeline) -> None:
    stamps = [
        pipeline.persist(Reserve(conversation_id="c", role="user")).message.created_at
        for _ in range(50)
    ]
    assert all(b > a for a, b in pairwise(stamps))


def test_persist_many_commits_all_ops_together(pipeline: Pipeline) -> None:
    results = pipeline.persist_many(
        [
            Add(conversation_id="c", role="user", content="q", message_id="u1"),
            Reserve(conversation_id="c", role="assistant", message_id="a1"),
            UpdateContent(message_id="a1", content="answer"),
        ]
    )
    assert [r.kind for r in results] == ["add", "reserve", "update_content"]
    assert [(m.id, m.status) for m in pipeline.messages("c")] == [
        ("u1", "complete"),
        ("a1", "complete"),
    ]


def test_persist_many_writes_nothing_if_one_op_fails(pipeline: Pipeline) -> None:
    with pytest.raises(MessageNotFound) as info:
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="user", content="q"),
                Reserve(conversation_id="c", role="assistant"),
                UpdateContent(message_id="nope", content="x"),
            ]
        )
    assert info.value.op_index == 2
    assert pipeline.messages("c") == []
    # The pipeline is usable afterwards.
    pipeline.persist(Add(conversation_id="c", role="user", content="q"))
    assert len(pipeline.messages("c")) == 1


def test_persist_accepts_op_dicts(pipeline: Pipeline) -> None:
    result = pipeline.persist(
        {"kind": "add", "conversation_id": "c", "role": "user", "content": "hi"}
    )
    assert isinstance(result, Added)


def test_mutating_a_returned_message_does_not_change_the_store(pipeline: Pipeline) -> None:
    content = [{"type": "text", "text": "original"}]
    added = pipeline.persist(
        Add(conversation_id="c", role="user", content=content, metadata={"k": [1]})
    )
    added.message.content[0]["text"] = "mutated"  # type: ignore[index]
    content[0]["text"] = "mutated too"
    read = pipeline.get(added.message.id)
    assert read is not None
    read.metadata["k"].append(2)
    again = pipeline.get(added.message.id)
    assert again is not None
    assert again.content == [{"type": "text", "text": "original"}] and again.metadata == {"k": [1]}


def test_one_pipeline_is_safe_to_share_between_threads(pipeline: Pipeline) -> None:
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        try:
            for i in range(100):
                mid = pipeline.persist(
                    Reserve(conversation_id=f"t{n}", role="assistant")
                ).message.id
                pipeline.persist(UpdateContent(message_id=mid, content=f"{n}-{i}"))
                assert pipeline.get(mid) is not None
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(4):
        messages = pipeline.messages(f"t{n}")
        assert [m.content for m in messages] == [f"{n}-{i}" for i in range(100)]
        assert all(m.status == "complete" for m in messages)
