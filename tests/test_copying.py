"""``copy_store`` moves every conversation to another store, resumably and without duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import Add, Delete, Pipeline, Reserve, UpdateContent
from anchorline.memory.copying import copy_store
from anchorline.memory.interface import Store
from anchorline.memory.stores import open_store


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Store]:
    path = str(tmp_path / "source.db")
    with Pipeline.open(path, load_entrypoints=False) as pipeline:
        for i in range(7):
            pipeline.persist(
                Add(conversation_id=f"c{i % 2}", role="user", content=f"turn {i}",
                    metadata={"n": i, "big": 2**70}, client_message_id=f"t{i}")
            )  # fmt: skip
        placeholder = pipeline.persist(Reserve(conversation_id="c0", role="assistant"))
        partial = pipeline.persist(Reserve(conversation_id="c1", role="assistant"))
        pipeline.persist(UpdateContent(message_id=partial.message.id, content="half", final=False))
        assert placeholder.message.status == "reserved"
    store = open_store(path)
    yield store
    store.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Store]:
    store = open_store(str(tmp_path / "target.db"))
    yield store
    store.close()


def everything(store: Store) -> list[object]:
    return list(store.scan(None, 10_000))


def test_a_copy_holds_every_message_as_it_was_placeholders_included(
    source: Store, target: Store
) -> None:
    report = copy_store(source, target, batch=4)
    assert (report.read, report.written, report.unchanged) == (9, 9, 0)
    assert everything(target) == everything(source)
    assert {m.status for m in everything(target)} == {"complete", "reserved"}


def test_a_second_copy_writes_nothing(source: Store, target: Store) -> None:
    copy_store(source, target)
    again = copy_store(source, target)
    assert (again.read, again.written, again.unchanged) == (9, 0, 9)
    assert everything(target) == everything(source)


def test_an_interrupted_copy_is_finished_by_the_next_run(source: Store, target: Store) -> None:
    def stop_after_first_batch(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_store(source, target, batch=4, progress=stop_after_first_batch)
    assert len(everything(target)) == 4  # the first batch committed, nothing after it
    finished = copy_store(source, target, batch=4)
    assert (finished.written, finished.unchanged) == (5, 4)
    assert everything(target) == everything(source)


def test_a_message_finished_after_it_was_copied_is_brought_up_to_date(
    source: Store, target: Store, tmp_path: Path
) -> None:
    copy_store(source, target)
    placeholder = next(m for m in source.scan(None, 100) if m.content == [])
    with Pipeline.open(str(tmp_path / "source.db"), load_entrypoints=False) as pipeline:
        pipeline.persist(UpdateContent(message_id=placeholder.id, content="finished later"))
    again = copy_store(source, target)
    assert again.written == 1
    assert target.get_message(placeholder.id) == source.get_message(placeholder.id)
    assert everything(target) == everything(source)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_copy_keeps_thread_links_and_never_hands_out_a_seq_again(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    path = str(tmp_path / "threads.db")
    with Pipeline.open(path, load_entrypoints=False) as pipeline:
        ids = [
            pipeline.persist(Add(conversation_id="s", role="user", content=f"m{i}")).message.id
            for i in range(4)
        ]
        for message_id in ids[2:]:  # seqs 3 and 4 were handed out, then deleted
            pipeline.persist(Delete(message_id=message_id))
        pipeline.persist(Add(conversation_id="parent", role="user", content="plan a trip"))
        pipeline.persist(
            Add(conversation_id="child", role="assistant", content="hotels", parent_id="parent")
        )
        before = pipeline.conversations()
    location = (
        request.getfixturevalue("postgres_url") if kind == "postgres" else str(tmp_path / "t.db")
    )
    source, target = open_store(path), open_store(location)
    try:
        report = copy_store(source, target)
        assert report.conversations == 2  # "s" (its next seq) and "child" (its parent)
        assert copy_store(source, target).conversations == 0  # a second run changes nothing
    finally:
        source.close()
        target.close()
    with Pipeline.open(location, load_entrypoints=False) as copied:
        assert [c.id for c in copied.threads("parent")] == ["child"]
        assert copied.conversations() == before
        again = copied.persist(Add(conversation_id="s", role="user", content="after the move"))
        assert again.message.seq == 5
