"""A write whose first attempt failed at COMMIT is replayed; what the call returns is
what the replay stored, on every store that retries (the in-memory double never
fails an attempt, so it has nothing to replay).

Each test fails the COMMIT of a unit of work once, for real: SQLite through a VFS
shim answering ``SQLITE_BUSY`` to the commit's write, PostgreSQL through a lock on
the change feed's head row held past the ``lock_timeout``. Between the failed
attempt and the replay another pipeline writes to the same conversation, so the
replay gets other seqs than the first attempt did.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from typing import Any

import attrs
import psycopg
import pytest

from anchorline import Add, Pipeline, Reserve, Update, hookimpl
from anchorline.memory.retry import RetryPolicy
from anchorline.results import PersistResult

from ..support.fault_vfs import FaultVFS

_shims = itertools.count()


@attrs.frozen(kw_only=True)
class _BetweenAttempts(RetryPolicy):
    """Runs what ``between`` holds where a store pauses before its next attempt (the
    failed attempt already rolled back)."""

    between: list[Callable[[], None]] = attrs.field(factory=list, eq=False)

    def backoff(self, attempt: int) -> float:
        while self.between:
            self.between.pop(0)()
        return 0.001


class _FailCommit:
    """A wrapper on ``persist`` that makes the unit's COMMIT fail once when armed; it
    also records what ``after_persist`` observers are given."""

    def __init__(self, arm: Callable[[], None]) -> None:
        self.arm = arm
        self.armed = False
        self.seen: list[PersistResult] = []

    @hookimpl
    def after_persist(self, op: object, result: PersistResult, context: object) -> None:
        self.seen.append(result)

    @hookimpl(wrapper=True)
    def persist(self, op: object, context: object) -> Generator[None, Any, Any]:
        result = yield
        if self.armed:
            self.armed = False
            self.arm()
        return result

    @hookimpl(wrapper=True)
    def persist_batch(self, ops: object, context: object) -> Generator[None, Any, Any]:
        return (yield from self.persist(ops, context))


@attrs.define
class Setup:
    pipeline: Pipeline
    other: Pipeline
    fault: _FailCommit
    policy: _BetweenAttempts

    def fail_next_commit(self, meanwhile: Callable[[Pipeline], object]) -> None:
        """The next unit's COMMIT fails once; ``meanwhile(other)`` runs before the replay."""
        self.fault.armed = True
        self.policy.between.append(lambda: meanwhile(self.other))


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, db_path: str) -> Iterator[Setup]:
    policy = _BetweenAttempts(busy_timeout=0.2, deadline=30)
    if request.param == "sqlite":
        shim = FaultVFS(f"anchorline-replay-{next(_shims)}")

        def arm() -> None:
            shim.fail_next = 1

        fault = _FailCommit(arm)
        pipeline = Pipeline.open(
            db_path, vfs=shim.name, retry=policy, plugins=[fault], load_entrypoints=False
        )
        other = Pipeline.open(db_path, load_entrypoints=False)
        held: list[psycopg.Connection[Any]] = []
    else:
        url = request.getfixturevalue("postgres_url")
        held = []

        def arm() -> None:
            # Holds the feed's head row, which the COMMIT moves: it times out.
            blocker = psycopg.connect(url)
            blocker.execute("SELECT last FROM anchorline.changes_head FOR UPDATE")
            held.append(blocker)

            def release() -> None:
                while held:
                    held.pop().close()

            policy.between.insert(0, release)  # run first, before the other writer

        fault = _FailCommit(arm)
        pipeline = Pipeline.open(url, retry=policy, plugins=[fault], load_entrypoints=False)
        other = Pipeline.open(url, load_entrypoints=False)
    try:
        yield Setup(pipeline, other, fault, policy)
    finally:
        for conn in held:
            conn.close()
        other.close()
        pipeline.close()


def _stored(pipeline: Pipeline, result: PersistResult) -> Any:
    message = getattr(result, "message", None)
    assert message is not None
    stored = pipeline.get(message.id)
    assert stored is not None
    return stored


def _other_add(other: Pipeline) -> object:
    return other.persist(Add(conversation_id="c", role="user", content="meanwhile"))


def test_an_add_replayed_after_its_commit_failed_returns_the_stored_seq(setup: Setup) -> None:
    pipeline = setup.pipeline
    pipeline.persist(Add(conversation_id="c", role="user", content="first"))
    setup.fail_next_commit(_other_add)
    result = pipeline.persist(Add(conversation_id="c", role="user", content="mine"))
    stored = _stored(pipeline, result)
    assert [m.content for m in pipeline.messages("c")] == ["first", "meanwhile", "mine"]
    assert result.message == stored
    assert result.message.seq == 3


def test_a_reserve_replayed_after_its_commit_failed_returns_the_stored_seq(
    setup: Setup,
) -> None:
    pipeline = setup.pipeline
    setup.fail_next_commit(_other_add)
    result = pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    assert result.message == _stored(pipeline, result)
    assert result.message.seq == 2


def test_a_batch_replayed_after_its_commit_failed_returns_every_stored_seq(
    setup: Setup,
) -> None:
    pipeline = setup.pipeline
    setup.fail_next_commit(_other_add)
    results = pipeline.persist_many(
        [Add(conversation_id="c", role="user", content=f"b{i}") for i in range(3)]
        + [Reserve(conversation_id="c", role="assistant")]
    )
    assert [r.message for r in results] == [_stored(pipeline, r) for r in results]  # type: ignore[union-attr]
    assert [r.message.seq for r in results] == [2, 3, 4, 5]  # type: ignore[union-attr]


def test_an_update_replayed_after_its_commit_failed_returns_the_merged_metadata_stored(
    setup: Setup,
) -> None:
    pipeline = setup.pipeline
    added = pipeline.persist(Add(conversation_id="c", role="user", content="x")).message
    setup.fail_next_commit(
        lambda other: other.persist(Update(message_id=added.id, metadata={"b": 2}))
    )
    result = pipeline.persist(Update(message_id=added.id, metadata={"a": 1}))
    assert result.message.metadata == {"a": 1, "b": 2}
    assert result.message == _stored(pipeline, result)


def test_after_persist_observers_see_the_stored_result(setup: Setup) -> None:
    pipeline = setup.pipeline
    setup.fail_next_commit(_other_add)
    result = pipeline.persist(Add(conversation_id="c", role="user", content="mine"))
    assert setup.fault.seen == [result]
    assert result.message.seq == 2
    assert result.message == _stored(pipeline, result)


def test_a_batch_replayed_after_a_write_failed_mid_transaction_returns_the_stored_seqs(
    postgres_url: str,
) -> None:
    """PostgreSQL: the batch's second write waits on a row lock past the ``lock_timeout``,
    so the whole transaction is replayed before its COMMIT (SQLite takes its write lock
    at BEGIN, so no write of its fails this way)."""
    policy = _BetweenAttempts(busy_timeout=0.2, deadline=30)
    with (
        Pipeline.open(postgres_url, retry=policy, load_entrypoints=False) as pipeline,
        Pipeline.open(postgres_url, load_entrypoints=False) as other,
    ):
        target = pipeline.persist(Add(conversation_id="c", role="user", content="x")).message
        blocker = psycopg.connect(postgres_url)
        blocker.execute("SELECT 1 FROM anchorline.messages WHERE id = %s FOR UPDATE", (target.id,))
        policy.between.extend([blocker.close, lambda: _other_add(other)])
        try:
            added, updated = pipeline.persist_many(
                [
                    Add(conversation_id="c", role="user", content="mine"),
                    Update(message_id=target.id, metadata={"a": 1}),
                ]
            )
        finally:
            blocker.close()
        assert [m.content for m in pipeline.messages("c")] == ["x", "meanwhile", "mine"]
        assert added.message == _stored(pipeline, added)  # type: ignore[union-attr]
        assert added.message.seq == 3  # type: ignore[union-attr]
        assert updated.message == _stored(pipeline, updated)  # type: ignore[union-attr]
