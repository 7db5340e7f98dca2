"""The conversation log, on every store: seq, paging by seq, conversations and threads,
the change feed, following it."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from anchorline import (
    Add,
    AsyncPipeline,
    Change,
    Conflict,
    CursorExpired,
    Delete,
    InvalidOp,
    Pipeline,
    Reserve,
    Update,
    UpdateContent,
)
from anchorline.ids import wall_ms

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


def test_a_limit_above_the_count_gives_every_message(pipeline: Pipeline) -> None:
    for text in ("1", "2", "3"):
        _add(pipeline, "c", text)
    for limit in (3, 4, 5, 6, 100):
        assert [m.content for m in pipeline.messages("c", limit=limit)] == ["1", "2", "3"]


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


# --- the change feed --------------------------------------------------------------------


def _kinds(changes: list[Change]) -> list[tuple[str, str, bool]]:
    return [(c.kind, c.message_id, c.final) for c in changes]


def test_the_feed_lists_every_write_in_commit_order_by_ids(pipeline: Pipeline) -> None:
    start = pipeline.changes()
    assert start == []
    added = pipeline.persist(Add(conversation_id="a", role="user", content="secret")).message
    reserved = pipeline.persist(Reserve(conversation_id="b", role="assistant")).message
    rid = reserved.id
    pipeline.persist(UpdateContent(message_id=rid, content="par", final=False))
    pipeline.persist(UpdateContent(message_id=rid, content="partial done"))
    pipeline.persist(Update(message_id=rid, metadata={"k": 1}))
    pipeline.persist(Delete(message_id=added.id))
    pipeline.persist(Delete(message_id="never-stored"))  # wrote nothing: not in the feed
    changes = pipeline.changes()
    assert _kinds(changes) == [
        ("add", added.id, True),
        ("reserve", rid, False),
        ("update_content", rid, False),
        ("update_content", rid, True),
        ("update", rid, True),
        ("delete", added.id, False),
    ]
    assert [(c.conversation_id, c.seq) for c in changes] == [
        ("a", 1), ("b", 1), ("b", 1), ("b", 1), ("b", 1), ("a", 1)
    ]  # fmt: skip
    cursors = [c.cursor for c in changes]
    assert cursors == sorted(set(cursors))
    assert all(c.at > 0 for c in changes)
    assert "secret" not in repr(changes)  # ids only, never the text
    # Reading on from a cursor gives exactly what followed it.
    assert pipeline.changes(after=cursors[2], limit=2) == changes[3:5]
    assert pipeline.changes(after=cursors[-1]) == []


def writes_after_a_burst(pipeline: Pipeline) -> list[Change]:
    """A burst of adds, then writes stamped by the wall clock: the feed they make."""
    early = pipeline.persist(Add(conversation_id="c", role="user", content="early")).message
    # A burst of new messages runs the write clock ahead of the wall clock (ids.Clock),
    # which is what the messages' updated_at, and so their changes' at, come from.
    burst = pipeline.persist_many(
        [Add(conversation_id="burst", role="user", content=str(i)) for i in range(3000)]
    )
    assert burst[-1].message.updated_at > wall_ms()  # ahead, as it is after any burst
    pipeline.persist(Update(message_id=early.id, metadata={"read": True}))  # wall clock
    pipeline.persist(Delete(message_id=early.id))
    first, second = burst[0].message.id, burst[1].message.id
    pipeline.persist_many([Update(message_id=first, metadata={"n": 1}), Delete(message_id=second)])
    pipeline.forget("burst")
    changes = pipeline.changes(limit=10_000)
    assert len(changes) == 1 + 3000 + 2 + 2 + 2999
    return changes


def test_the_feeds_at_never_goes_back_in_cursor_order(pipeline: Pipeline) -> None:
    ats = [c.at for c in writes_after_a_burst(pipeline)]
    assert ats == sorted(ats)


def test_the_feed_records_what_a_write_did(pipeline: Pipeline) -> None:
    op = Reserve(conversation_id="c", role="assistant", client_message_id="turn")
    placeholder = pipeline.persist(op).message
    pipeline.persist(op)  # deduplicated: nothing written
    done = Add(conversation_id="c", role="assistant", content="answer", client_message_id="turn")
    pipeline.persist(done)  # completes its own placeholder: an add
    with pytest.raises(Conflict):
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="user", content="rolled back"),
                Add(conversation_id="c", role="user", content="x", message_id=placeholder.id),
            ]
        )
    batch = pipeline.persist_many(
        [Add(conversation_id="c", role="user", content=str(i)) for i in range(3)]
    )
    assert _kinds(pipeline.changes()) == [
        ("reserve", placeholder.id, False),
        ("add", placeholder.id, True),
        *[("add", result.message.id, True) for result in batch],
    ]
    assert [c.seq for c in pipeline.changes()[2:]] == [2, 3, 4]


def test_forget_and_compact_are_in_the_feed(pipeline: Pipeline) -> None:
    kept = [_add(pipeline, "kept", "stays")]
    seqs = [_add(pipeline, "gone", str(i)) for i in range(3)]
    summary = pipeline.compact("gone", "the gist", first_kept_seq=3).message
    start = pipeline.changes()[-1].cursor
    assert _kinds(pipeline.changes()[-1:]) == [("add", summary.id, True)]
    gone = {m.id: m.seq for m in pipeline.messages("gone", roles=["user", "compaction"])}
    assert pipeline.forget("gone").deleted == 4
    after = pipeline.changes(after=start)
    # One delete per forgotten message, compaction included, in seq order.
    assert [(c.kind, c.message_id, c.seq) for c in after] == sorted(
        (("delete", mid, seq) for mid, seq in gone.items()), key=lambda t: t[2]
    )
    assert {c.conversation_id for c in after} == {"gone"}
    assert [c.seq for c in after] == [*seqs, summary.seq]
    assert pipeline.forget("gone").deleted == 0
    assert pipeline.changes(after=after[-1].cursor) == []  # forgetting nothing writes nothing
    assert kept == [1]


def test_the_feed_refuses_bad_arguments(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidOp, match=r"^after:"):
        pipeline.changes(after=-1)
    with pytest.raises(InvalidOp, match=r"^limit:"):
        pipeline.changes(limit=0)
    with pytest.raises(InvalidOp, match=r"^before:"):
        pipeline.trim_changes(before="5")  # type: ignore[arg-type]


def test_a_cursor_past_the_feeds_end_is_refused(pipeline: Pipeline) -> None:
    _add(pipeline, "c", "1")
    newest = pipeline.changes()[-1].cursor
    assert pipeline.changes(after=newest) == []  # the end itself is a fine place to wait
    # A cursor from another database (or from before a restore) would skip what comes next.
    with pytest.raises(InvalidOp, match=rf"^after: cursor {newest + 5} is past the newest"):
        pipeline.changes(after=newest + 5)
    with pytest.raises(InvalidOp, match=r"^after: cursor .* is past the newest"):
        pipeline.follow(after=newest + 5)
    for huge in (2**63, 2**70):
        with pytest.raises(InvalidOp, match=r"^after:"):
            pipeline.changes(after=huge)
        with pytest.raises(InvalidOp, match=r"^after_seq:"):
            pipeline.messages("c", after_seq=huge)
        with pytest.raises(InvalidOp, match=r"^limit:"):
            pipeline.messages("c", limit=huge)


def test_a_reader_resumes_from_its_cursor_after_a_reopen(location: str) -> None:
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        first = [_add(pipeline, "c", str(i)) for i in range(3)]
        seen = pipeline.changes(limit=2)
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        later = _add(pipeline, "c", "after the reopen")
        rest = pipeline.changes(after=seen[-1].cursor)
    assert [c.seq for c in seen] == first[:2]
    assert [c.seq for c in rest] == [first[2], later]
    assert rest[0].cursor > seen[-1].cursor


def test_trimmed_cursors_raise_and_cursors_are_never_reused(pipeline: Pipeline) -> None:
    for i in range(5):
        _add(pipeline, "c", str(i))
    cursors = [c.cursor for c in pipeline.changes()]
    assert pipeline.trim_changes(before=cursors[3]) == 3
    with pytest.raises(CursorExpired, match=rf"cursor {cursors[0]}\b") as caught:
        pipeline.changes(after=cursors[0])
    assert isinstance(caught.value, LookupError) and caught.value.oldest == cursors[3]
    with pytest.raises(CursorExpired):
        pipeline.changes()  # from the very start: gone too
    assert [c.cursor for c in pipeline.changes(after=cursors[2])] == cursors[3:]
    assert pipeline.trim_changes(before=10**12) == 1  # the newest is always kept
    assert [c.cursor for c in pipeline.changes(after=cursors[3])] == cursors[4:]
    _add(pipeline, "c", "next")
    assert pipeline.changes(after=cursors[4])[0].cursor > cursors[4]


# --- PostgreSQL: cursor order is commit order ----------------------------------------------


def test_a_transaction_that_commits_first_gets_the_smaller_cursor(postgres_url: str) -> None:
    from anchorline.ids import clock, new_message_id
    from anchorline.memory.postgres import PostgresStore

    with PostgresStore(postgres_url) as store:
        early = store.begin()  # starts first, commits last
        first = early.add(
            Add(conversation_id="a", role="user", content="1"),
            message_id=new_message_id(),
            now=clock.now(),
        )
        late = store.begin()
        second = late.add(
            Add(conversation_id="b", role="user", content="2"),
            message_id=new_message_id(),
            now=clock.now(),
        )
        late.commit()
        seen = store.changes(0, 10)  # a reader in between sees only what committed
        early.commit()
        changes = store.changes(0, 10)
    assert [c.message_id for c in seen] == [second.message.id]
    assert [c.message_id for c in changes] == [second.message.id, first.message.id]
    assert changes[0].cursor < changes[1].cursor


# --- following ----------------------------------------------------------------------------


def _collect(changes: Iterator[Change], into: list[Change], count: int) -> threading.Thread:
    def run() -> None:
        for change in changes:
            into.append(change)
            if len(into) == count:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follow_yields_writes_as_they_commit(pipeline: Pipeline) -> None:
    before = pipeline.persist(Add(conversation_id="c", role="user", content="old")).message
    got: list[Change] = []
    follower = _collect(pipeline.follow(timeout=60), got, 2)  # from the feed's end
    time.sleep(0.2)  # let it read the (empty) end of the feed and wait
    one = pipeline.persist(Add(conversation_id="c", role="user", content="new")).message
    two = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message
    follower.join(timeout=30)
    assert not follower.is_alive(), "follow did not yield the writes"
    assert [c.message_id for c in got] == [one.id, two.id]
    assert before.id not in {c.message_id for c in got}
    # Resuming from a cursor yields what followed it, then waits for more.
    replay = list(pipeline.follow(after=got[0].cursor, timeout=0.3))
    assert [c.message_id for c in replay] == [two.id]


def test_closing_the_pipeline_ends_a_follow(pipeline: Pipeline) -> None:
    got: list[Change] = []
    follower = _collect(pipeline.follow(), got, 1)
    time.sleep(0.2)
    pipeline.close()
    follower.join(timeout=30)
    assert not follower.is_alive(), "follow kept waiting after close"
    assert got == []


def _write_one(location: str, conversation: str) -> None:
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id=conversation, role="user", content="from afar"))


def test_follow_hears_another_process(location: str) -> None:
    with Pipeline.open(location, load_entrypoints=False) as pipeline:
        got: list[Change] = []
        follower = _collect(pipeline.follow(timeout=60), got, 1)
        time.sleep(0.2)
        writer = multiprocessing.get_context("spawn").Process(
            target=_write_one, args=(location, "remote")
        )
        writer.start()
        writer.join(timeout=120)
        assert writer.exitcode == 0
        follower.join(timeout=30)
        assert not follower.is_alive(), "follow did not hear the other process's write"
    assert [(c.kind, c.conversation_id) for c in got] == [("add", "remote")]


def test_async_follow(pipeline: Pipeline) -> None:
    async def main() -> list[Change]:
        apipe = AsyncPipeline(pipeline, ThreadPoolExecutor(max_workers=1))
        got: list[Change] = []

        async def follow() -> None:
            async for change in apipe.follow(after=0, timeout=30):
                got.append(change)
                if len(got) == 2:
                    return

        task = asyncio.create_task(follow())
        await apipe.persist(Add(conversation_id="c", role="user", content="1"))
        await asyncio.sleep(0.1)
        await apipe.persist(Add(conversation_id="c", role="user", content="2"))
        await asyncio.wait_for(task, timeout=30)
        return got

    got = asyncio.run(main())
    assert [c.seq for c in got] == [1, 2]


# --- conversations and threads ------------------------------------------------------------


def test_conversations_newest_activity_first_in_pages(pipeline: Pipeline) -> None:
    for conversation in ("a", "b", "c"):
        _add(pipeline, conversation, "hello")
    _add(pipeline, "a", "again")  # a is now the most recent
    gone = pipeline.persist(Add(conversation_id="b", role="user", content="x")).message
    pipeline.persist(Delete(message_id=gone.id))
    first = pipeline.conversations(limit=2)
    assert [c.id for c in first] == ["b", "a"]
    rest = pipeline.conversations(limit=2, after=first[-1].key)
    assert [c.id for c in rest] == ["c"]
    counts = {c.id: c.message_count for c in first + rest}
    assert counts == {"a": 2, "b": 1, "c": 1}
    a = first[1]
    assert a.first_at < a.last_at and a.parent_id is None
    with pytest.raises(InvalidOp, match=r"^after:"):
        pipeline.conversations(after="not a key")


def test_a_conversation_names_its_parent_once(pipeline: Pipeline) -> None:
    _add(pipeline, "main", "plan the trip")
    pipeline.persist(Reserve(conversation_id="sub-1", role="assistant", parent_id="main"))
    pipeline.persist(Add(conversation_id="sub-2", role="user", content="go", parent_id="main"))
    # Named again later, or another parent: the conversation keeps its first.
    pipeline.persist(Add(conversation_id="sub-1", role="user", content="x", parent_id="other"))
    _add(pipeline, "main", "more")
    threads = pipeline.threads("main")
    assert sorted(c.id for c in threads) == ["sub-1", "sub-2"]
    assert {c.parent_id for c in threads} == {"main"}
    assert pipeline.threads("other") == []
    assert {c.id: c.parent_id for c in pipeline.conversations()}["main"] is None
