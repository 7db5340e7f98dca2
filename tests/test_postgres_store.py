"""The PostgreSQL store against a real server: what only a shared, networked database
can get wrong (many processes, dropped connections, restarts, SKIP LOCKED, NOTIFY).

The behaviour every store shares is the contract suite's (``tests/contract/``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from anchorline import (
    Add,
    ConfigurationError,
    Conflict,
    Delete,
    IncompatibleStore,
    InvalidOp,
    Pipeline,
    Reserve,
    RetryPolicy,
    StorageUnavailable,
    Update,
    UpdateContent,
)
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.postgres import PostgresStore, transaction
from anchorline.memory.postgres import store as store_module
from anchorline.memory.postgres.connection import PooledConnection
from anchorline.memory.postgres.crud import Session
from anchorline.results import Added, Message

if TYPE_CHECKING:
    from .support.postgres_server import PgServer, Server

#: Waits out a restart or a killed connection, but gives up within a test's patience.
PATIENT = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, max_attempts=1000, deadline=30.0)
#: Gives up fast, for the tests that want it to.
BRIEF = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=1000, deadline=1.0)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_url, PATIENT)
    try:
        yield opened
    finally:
        opened.close()


def add(store: PostgresStore, op: Add) -> Added:
    tx = store.begin()
    try:
        result = tx.add(op, message_id=op.message_id or new_message_id(), now=clock.now())
    except BaseException:
        tx.rollback()
        raise
    tx.commit()
    return result


def text(n: int | str) -> Add:
    return Add(conversation_id="c", role="user", content=f"message {n}")


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


# --- the schema -------------------------------------------------------------------------

OPENER = """
    import os, sys, time
    from anchorline import Add, RetryPolicy
    from anchorline.ids import clock, new_message_id
    from anchorline.memory.postgres import PostgresStore
    url, go, name = sys.argv[1], sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(go):  # open together, so the creations really race
        time.sleep(0.001)
    store = PostgresStore(url, RetryPolicy(deadline=60, max_attempts=1000))
    tx = store.begin()
    tx.add(Add(conversation_id="c", role="user", content=name), message_id=new_message_id(),
           now=clock.now())
    tx.commit()
    store.close()
"""


def test_processes_opening_a_new_database_at_once_create_its_schema_once(
    postgres_url: str, tmp_path: Any
) -> None:
    go = tmp_path / "go"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(OPENER), postgres_url, str(go), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        for opener in openers:
            assert opener.stdout is not None and opener.stdout.readline() == "ready\n"
        go.touch()
        outcomes = [opener.communicate(timeout=120) for opener in openers]
    finally:
        for opener in openers:
            opener.kill()
    assert [opener.returncode for opener in openers] == [0] * 4, outcomes
    rows = sql(postgres_url, "SELECT key, value FROM anchorline.anchorline_meta ORDER BY key")
    assert rows == [("application", "anchorline"), ("functions", "3"), ("schema_version", "2")]
    contents = sql(postgres_url, "SELECT content FROM anchorline.messages ORDER BY content")
    assert [json.loads(c) for (c,) in contents] == ["p0", "p1", "p2", "p3"]


def test_a_newer_schema_is_refused_and_left_as_it_is(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    sql(
        postgres_url,
        "UPDATE anchorline.anchorline_meta SET value = '99' WHERE key = 'schema_version'",
    )
    with pytest.raises(IncompatibleStore, match=r"schema version 99.*upgrade anchorline"):
        PostgresStore(postgres_url)
    assert sql(postgres_url, "SELECT count(*) FROM anchorline.messages") == [(0,)]


def test_other_schemas_are_left_alone_but_a_foreign_anchorline_schema_is_refused(
    postgres_url: str, postgres_server: Server
) -> None:
    sql(postgres_url, "CREATE TABLE public.orders (id int); INSERT INTO public.orders VALUES (1)")
    with PostgresStore(postgres_url) as store:
        add(store, text(1))
    assert sql(postgres_url, "SELECT id FROM public.orders") == [(1,)]

    with postgres_server.fresh_database() as other:
        sql(other, "CREATE SCHEMA anchorline; CREATE TABLE anchorline.stuff (id int)")
        with pytest.raises(IncompatibleStore, match=r"anchorline.*not Anchorline's.*stuff"):
            PostgresStore(other)
        assert sql(other, "SELECT tablename FROM pg_tables WHERE schemaname = 'anchorline'") == [
            ("stuff",)
        ]


# --- what goes in comes out ---------------------------------------------------------------

NASTY: list[dict[str, Any]] = [
    {"type": "text", "zebra": 1, "apple": 2, "text": "keys keep their order"},
    {"type": "data", "big": 2**64 + 1, "negative": -(2**70), "float": 1.5e300},
    {"type": "text", "text": "nul \x00 inside, tab \t, quote \", backslash \\ and 'single'"},
    {"type": "text", "text": "lone surrogates \ud800 and \udfff, a pair \U0001f600, ünïcødé"},
    {"type": "text", "text": "%s %(name)s $1 -- ; DROP TABLE messages"},
]


@pytest.mark.parametrize("first_in_transaction", [True, False])
def test_content_and_metadata_round_trip_exactly(
    store: PostgresStore, postgres_url: str, first_in_transaction: bool
) -> None:
    op = Add(
        conversation_id="c ü '%s",
        role="assistant",
        content=NASTY,
        metadata={"z": 1, "a": {"y": [2**63, "\x00", "\udc80"]}, "m": None},
        client_message_id="k ü 😀",
    )
    tx = store.begin()
    if not first_in_transaction:  # the first statement goes with BEGIN, bound on the client
        tx.reserve(
            Reserve(conversation_id="other", role="user"), message_id="first", now=clock.now()
        )
    added = tx.add(op, message_id=new_message_id(), now=clock.now())
    tx.commit()
    stored = store.get_message(added.message.id)
    assert stored == added.message
    assert stored is not None and stored.content == NASTY
    assert list(stored.content[0]) == ["type", "zebra", "apple", "text"]  # type: ignore[index]
    assert list(stored.metadata) == ["z", "a", "m"]
    raw = sql(
        postgres_url,
        "SELECT content, metadata FROM anchorline.messages WHERE id = %s",
        (added.message.id,),
    )
    assert raw == [(op.content_json, op.metadata_json)]
    assert store.list_messages("c ü '%s", None) == [stored]
    again = add(store, op)
    assert again.deduplicated and again.message == stored


# --- many writers ---------------------------------------------------------------------------


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` on ``count`` threads at once; their results (or errors)."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except BaseException as e:  # reported by the test
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a writer hung"
    return results


def test_writers_racing_on_one_client_message_id_get_one_message(
    store: PostgresStore, postgres_url: str
) -> None:
    op = Add(conversation_id="c", role="user", content="once", client_message_id="turn-1")
    with PostgresStore(postgres_url, PATIENT) as other:
        results = run_threads(4, lambda i: add((store, other)[i % 2], op))
    assert all(isinstance(r, Added) for r in results), results
    assert len({r.message.id for r in results}) == 1
    assert sorted(r.deduplicated for r in results) == [False, True, True, True]
    assert len(store.list_messages("c", None)) == 1


def test_concurrent_metadata_updates_of_one_message_lose_no_key(store: PostgresStore) -> None:
    mid = add(store, text(1)).message.id

    def update(i: int) -> None:
        for j in range(10):
            tx = store.begin()
            tx.update(
                Update(message_id=mid, metadata={f"t{i}-{j}": j}), now=wall_ms(), expected=None
            )
            tx.commit()

    assert run_threads(4, update) == [None] * 4
    stored = store.get_message(mid)
    assert stored is not None and len(stored.metadata) == 40


def test_a_full_pool_makes_a_writer_wait_then_give_up_in_one_line(postgres_url: str) -> None:
    with PostgresStore(postgres_url, BRIEF, pool_max=1) as store:
        held = store.begin()
        try:
            with pytest.raises(StorageUnavailable) as info:
                store.begin()
        finally:
            held.rollback()
        message = str(info.value)
        assert "\n" not in message and "pooled connection stayed busy" in message
        assert "pool_max" in message and info.value.__cause__ is None
        add(store, text("after"))  # the held connection went back


# --- dropped connections and restarts ---------------------------------------------------------


def kill_sessions(admin_url: str, dbname: str) -> int:
    """``pg_terminate_backend`` every session of the store on ``dbname``; how many."""
    rows = sql(
        admin_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = 'anchorline'",
        (dbname,),
    )
    return len(rows)


def dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def test_a_transaction_whose_connection_is_killed_midway_is_replayed_whole(
    store: PostgresStore, postgres_url: str, postgres_server: Server
) -> None:
    before = add(store, text("before"))
    tx = store.begin()
    first = tx.add(text(1), message_id=new_message_id(), now=clock.now())
    placeholder = tx.reserve(
        Reserve(conversation_id="c", role="assistant"), message_id=new_message_id(), now=clock.now()
    )
    assert kill_sessions(postgres_server.conninfo, dbname(postgres_url)) >= 1
    done = tx.update_content(
        UpdateContent(message_id=placeholder.message.id, content="answer"),
        now=wall_ms(),
        expected=None,
    )
    tx.commit()
    assert store.list_messages("c", None) == [before.message, first.message, done.message]
    assert kill_sessions(postgres_server.conninfo, dbname(postgres_url)) >= 1  # idle ones
    after = add(store, text("after"))
    assert store.get_message(after.message.id) == after.message


def test_a_commit_lost_with_its_connection_is_not_applied_twice(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    mid = add(store, Add(conversation_id="c", role="assistant", content="draft")).message.id
    real_commit = transaction._finish  # the feed rows and the COMMIT
    calls = []

    def commit_then_drop(session: Session) -> None:
        calls.append(session)
        if len(calls) == 1:  # it commits, but the answer never arrives
            real_commit(session)
            session.conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        real_commit(session)

    tx = store.begin()
    updated = tx.update_content(
        UpdateContent(message_id=mid, content="final"), now=wall_ms(), expected=None
    )
    monkeypatch.setattr(transaction, "_finish", commit_then_drop)
    tx.commit()
    monkeypatch.undo()
    # A replay would have written again, one millisecond later.
    assert store.get_message(mid) == updated.message


def test_a_commit_that_never_reached_the_server_is_replayed(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit = transaction._finish  # the feed rows and the COMMIT
    calls = []

    def drop_before_commit(session: Session) -> None:
        calls.append(session)
        if len(calls) == 1:
            session.conn.close()  # the server rolls the transaction back
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        real_commit(session)

    tx = store.begin()
    added = tx.add(text(1), message_id=new_message_id(), now=clock.now())
    monkeypatch.setattr(transaction, "_finish", drop_before_commit)
    tx.commit()
    monkeypatch.undo()
    assert len(calls) == 2
    assert store.list_messages("c", None) == [added.message]


# --- a lone write: its statement is its own transaction ------------------------------


@pytest.fixture
def pipeline(postgres_url: str) -> Iterator[Pipeline]:
    with Pipeline.open(postgres_url, index="none", load_entrypoints=False) as opened:
        yield opened


def test_a_lone_write_is_committed_by_its_one_statement(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def begins(self: Session, query: str, params: Any = None) -> Any:
        raise AssertionError(f"a lone write began a transaction: {query[:60]}")

    monkeypatch.setattr(Session, "execute", begins)
    added = pipeline.persist(text("one"))
    reserved = pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    mid = reserved.message.id
    partial = pipeline.persist(UpdateContent(message_id=mid, content="Hel", final=False))
    final = pipeline.persist(UpdateContent(message_id=mid, content="Hello"))
    assert partial.message.content == "Hel"
    assert pipeline.messages("c") == [added.message, final.message]
    assert [(c.kind, c.seq, c.final) for c in pipeline.changes()] == [
        ("add", 1, True), ("reserve", 2, False), ("update_content", 2, False),
        ("update_content", 2, True),
    ]  # fmt: skip


class _LosesAnswer:
    """The connection's cursor for a lone write: the statement runs on the server (or,
    ``reaches=False``, never gets there), then the connection drops before the answer
    comes back, once."""

    def __init__(self, reaches: bool) -> None:
        self.reaches = reaches
        self.dropped = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make this the cursor every pooled connection's lone writes use."""
        monkeypatch.setattr(
            PooledConnection, "write_cursor", property(self.get, lambda conn, cursor: None)
        )

    def get(self, conn: psycopg.Connection[Any]) -> Any:
        cursor = conn.cursor()
        outer = self

        class Cursor:
            def execute(self, query: str, params: Any) -> Any:
                if outer.dropped:
                    return cursor.execute(query, params)
                outer.dropped += 1
                if outer.reaches:
                    cursor.execute(query, params)
                conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        return Cursor()


@pytest.mark.parametrize("reaches", [True, False], ids=["committed", "never-sent"])
def test_a_lone_add_whose_answer_is_lost_is_written_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, reaches: bool
) -> None:
    cursors = _LosesAnswer(reaches)
    cursors.install(monkeypatch)
    added = pipeline.persist(text("once"))
    assert cursors.dropped == 1
    assert pipeline.messages("c") == [added.message]
    assert added.message.seq == 1 and not added.deduplicated
    assert [(c.kind, c.message_id) for c in pipeline.changes()] == [("add", added.message.id)]


@pytest.mark.parametrize("final", [True, False], ids=["final", "partial"])
@pytest.mark.parametrize("reaches", [True, False], ids=["committed", "never-sent"])
def test_a_lone_content_update_whose_answer_is_lost_is_applied_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, reaches: bool, final: bool
) -> None:
    reserved = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message
    pipeline.persist(UpdateContent(message_id=reserved.id, content="do", final=False))
    cursors = _LosesAnswer(reaches)
    cursors.install(monkeypatch)
    done = pipeline.persist(UpdateContent(message_id=reserved.id, content="done", final=final))
    assert cursors.dropped == 1
    assert pipeline.get(reserved.id) == done.message
    assert done.message.content == "done"
    assert done.message.status == ("complete" if final else "reserved")
    assert [(c.kind, c.final) for c in pipeline.changes()] == [
        ("reserve", False), ("update_content", False), ("update_content", final)
    ]  # fmt: skip


def test_a_stale_guard_is_refused_after_the_pool_lost_its_connections(
    pipeline: Pipeline, postgres_server: Server, postgres_url: str
) -> None:
    reserved = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message
    done = pipeline.persist(
        UpdateContent(message_id=reserved.id, content="done"),
        expect_updated_at={reserved.id: reserved.updated_at},
    ).message
    assert kill_sessions(postgres_server.conninfo, dbname(postgres_url)) >= 1  # idle ones
    # The same content again, guarded by what was read before the first write.
    with pytest.raises(Conflict, match="updated_at"):
        pipeline.persist(
            UpdateContent(message_id=reserved.id, content="done"),
            expect_updated_at={reserved.id: reserved.updated_at},
        )
    assert pipeline.get(reserved.id) == done


def test_a_lone_add_meeting_a_stored_client_id_takes_no_seq_and_logs_nothing(
    pipeline: Pipeline,
) -> None:
    first = pipeline.persist(
        Add(conversation_id="c", role="user", content="x", client_message_id="k")
    )
    again = pipeline.persist(
        Add(conversation_id="c", role="user", content="x", client_message_id="k")
    )
    assert again.deduplicated and again.message == first.message
    assert pipeline.persist(text("next")).message.seq == 2
    assert [c.seq for c in pipeline.changes()] == [1, 2]


@pytest.fixture
def own_server(own_postgres_server: Server) -> PgServer:
    """The module's own server, to stop and start again."""
    assert own_postgres_server.process is not None
    return own_postgres_server.process


@pytest.fixture
def own_url(own_postgres_server: Server) -> Iterator[str]:
    """A new database on the module's own server."""
    with own_postgres_server.fresh_database() as url:
        yield url


def test_writes_during_a_server_restart_wait_for_it_and_nothing_acknowledged_is_lost(
    own_server: PgServer, own_url: str
) -> None:
    url = own_url
    acknowledged: list[Message] = []
    with PostgresStore(url, PATIENT) as store:
        store.outbox.enable()
        for i in range(5):
            acknowledged.append(add(store, text(i)).message)
        halfway = threading.Event()

        def write() -> None:
            for i in range(5, 60):
                acknowledged.append(add(store, text(i)).message)
                if i == 10:
                    halfway.set()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert halfway.wait(30)
            own_server.stop_postmaster()  # fast shutdown: every session gets 57P01
            time.sleep(0.3)
        finally:
            own_server.start_postmaster()
            writer.join(timeout=60)
        assert not writer.is_alive() and len(acknowledged) == 60
        assert store.list_messages("c", None) == acknowledged
        assert store.outbox.pending_ids() == {m.id for m in acknowledged}


def test_a_server_down_past_the_deadline_is_one_line_naming_it_without_the_password(
    own_server: PgServer, own_url: str
) -> None:
    url = own_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    name = dbname(url)
    with PostgresStore(url, BRIEF) as store:
        assert "s3cret" not in store.location and "postgres@" in store.location
        add(store, text(1))
        own_server.stop_postmaster()
        try:
            with pytest.raises(StorageUnavailable) as write:
                add(store, text(2))
            with pytest.raises(StorageUnavailable) as read:
                store.get_message("x")
        finally:
            own_server.start_postmaster()
        for info in (write, read):
            message = str(info.value)
            assert "\n" not in message and "s3cret" not in message
            assert message.startswith(f"PostgreSQL database {name} on {own_server.base}")
            assert "attempt(s)" in message and info.value.__cause__ is None
            assert isinstance(info.value.last_cause, psycopg.Error)
        recovered = time.monotonic() + 30
        while True:  # the same store works again once the server is back
            try:
                assert store.list_messages("c", None)[0].content == "message 1"
                break
            except StorageUnavailable:
                assert time.monotonic() < recovered, "the store did not reconnect"
        with pytest.raises(StorageUnavailable, match="does not exist") as missing:
            PostgresStore(url.replace(f"/{name}?", "/nowhere?"), BRIEF)
        assert missing.value.attempts == 1 and "s3cret" not in str(missing.value)


# --- copying a store --------------------------------------------------------------------------


def test_scan_and_restore_copy_a_store_exactly(
    store: PostgresStore, postgres_server: Server
) -> None:
    add(store, Add(conversation_id="a", role="user", content=NASTY, client_message_id="k"))
    tx = store.begin()
    tx.reserve(
        Reserve(conversation_id="a", role="assistant", metadata={"m": 1}),
        message_id=new_message_id(),
        now=clock.now(),
    )
    tx.commit()
    for i in range(5):
        add(store, Add(conversation_id="b", role="user", content=str(i)))
    with postgres_server.fresh_database() as other_url, PostgresStore(other_url) as copy:
        after = None
        while page := store.scan(after, 3):
            tx = copy.begin()
            assert all(tx.restore(m) for m in page)
            tx.commit()
            after = page[-1].id
        originals = store.scan(None, 100)
        assert copy.scan(None, 100) == originals
        assert [m.id for m in originals] == sorted(m.id for m in originals)
        tx = copy.begin()
        assert not tx.restore(originals[0])  # already there: left as it is
        tx.commit()
        assert copy.list_messages("b", 2) == store.list_messages("b", 2)


def test_complete_messages_are_streamed_page_by_page(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PAGE", 2)
    ids = {add(store, text(i)).message.id for i in range(5)}
    tx = store.begin()
    tx.reserve(Reserve(conversation_id="c", role="user"), message_id="z", now=clock.now())
    tx.commit()
    assert {m.id for m in store.complete_messages()} == ids


# --- the outbox -------------------------------------------------------------------------------

DRAINER = """
    import json, os, sys, time
    from anchorline import RetryPolicy
    from anchorline.memory.postgres import PostgresStore
    url, go = sys.argv[1], sys.argv[2]
    claimed = []
    with PostgresStore(url, RetryPolicy(deadline=60, max_attempts=1000)) as store:
        print("ready", flush=True)
        while not os.path.exists(go):  # start together, so the claims really race
            time.sleep(0.001)
        while items := store.outbox.claim(limit=3):
            claimed += [i.message_id for i in items]
            store.outbox.done(items)
    print(json.dumps(claimed))
"""


def test_drainers_in_three_processes_claim_each_item_once(
    store: PostgresStore, postgres_url: str, tmp_path: Any
) -> None:
    store.outbox.enable()
    tx = store.begin()
    for i in range(300):
        tx.add(text(i), message_id=new_message_id(), now=clock.now())
    tx.commit()
    go = tmp_path / "go"
    drainers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRAINER), postgres_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for drainer in drainers:
            assert drainer.stdout is not None and drainer.stdout.readline() == "ready\n"
        go.touch()
        outcomes = [drainer.communicate(timeout=120) for drainer in drainers]
    finally:
        for drainer in drainers:
            drainer.kill()
    assert [d.returncode for d in drainers] == [0, 0, 0], outcomes
    claimed = [json.loads(out) for out, _ in outcomes]
    every = [mid for batch in claimed for mid in batch]
    assert len(every) == len(set(every)) == 300
    assert store.outbox.status().pending == 0


def test_a_lease_keeps_other_drainers_off_until_it_expires(
    store: PostgresStore, postgres_url: str
) -> None:
    store.outbox.enable()
    mid = add(store, text(1)).message.id
    with PostgresStore(postgres_url) as other:
        [held] = store.outbox.claim(limit=10, lease_ms=60_000)
        assert other.outbox.claim(limit=10) == [] and not other.outbox.has_due()
        store.outbox.failed([held], "index down")  # lets go, with a backoff
        assert not other.outbox.has_due() and other.outbox.has_due(force=True)
        [retried] = other.outbox.claim(limit=10, lease_ms=1, force=True)
        assert (retried.message_id, retried.attempts) == (mid, 1)
        expired = time.monotonic() + 10
        while not other.outbox.claim(limit=10, force=True):  # the 1 ms lease runs out
            assert time.monotonic() < expired, "a lease of 1 ms never expired"
            time.sleep(0.01)
        assert store.outbox.status().last_error == "index down"


def test_an_item_queued_again_while_claimed_outlives_the_older_claim(
    store: PostgresStore,
) -> None:
    store.outbox.enable()
    mid = add(store, text(1)).message.id
    [item] = store.outbox.claim(limit=10)
    tx = store.begin()
    tx.update_content(UpdateContent(message_id=mid, content="edited"), now=wall_ms(), expected=None)
    tx.commit()
    store.outbox.done([item])
    [again] = store.outbox.claim(limit=10)
    assert (again.message_id, again.action) == (mid, "upsert") and again.seq == item.seq + 1
    tx = store.begin()
    tx.delete(Delete(message_id=mid), expected=None)
    tx.commit()
    store.outbox.done([again])
    assert [(i.message_id, i.action) for i in store.outbox.claim(limit=10)] == [(mid, "delete")]


def test_wait_is_woken_by_a_commit_of_another_store(
    store: PostgresStore, postgres_url: str
) -> None:
    store.outbox.enable()
    assert store.outbox.wait(0.05) is False  # nothing happened; it listens from now on
    woken: list[bool] = []
    thread = threading.Thread(target=lambda: woken.append(store.outbox.wait(30)))
    with PostgresStore(postgres_url) as writer:  # another process's store, say
        thread.start()
        add(writer, text(1))
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert woken == [True]
    assert store.outbox.has_due()


@pytest.mark.parametrize("field", ["message_id", "conversation_id", "client_message_id"])
def test_an_id_with_a_nul_is_refused_and_the_transaction_goes_on(
    store: PostgresStore, field: str
) -> None:
    fields = {"conversation_id": "c", "client_message_id": "k", "message_id": "m"}
    fields[field] = "a\x00b"
    tx = store.begin()
    with pytest.raises(InvalidOp, match=rf"{field}: contains a NUL character"):
        tx.add(
            Add(role="user", content="hi", **fields),
            message_id=fields["message_id"],
            now=clock.now(),
        )
    other = tx.add(text(2), message_id=new_message_id(), now=clock.now())
    tx.commit()
    assert store.list_messages("c", None) == [other.message]
    assert store.get_message("a\x00b") is None and store.list_messages("a\x00b", None) == []


def test_a_refused_add_leaves_the_transaction_usable(store: PostgresStore) -> None:
    add(store, Add(conversation_id="c", role="user", content="hi", message_id="m-1"))
    tx = store.begin()
    with pytest.raises(Conflict, match="m-1"):
        tx.add(
            Add(conversation_id="c", role="user", content="again", message_id="m-1"),
            message_id="m-1",
            now=clock.now(),
        )
    other = tx.add(text(2), message_id=new_message_id(), now=clock.now())
    tx.commit()
    assert [m.id for m in store.list_messages("c", None)] == ["m-1", other.message.id]


def test_the_triggers_queue_what_each_write_means_for_the_index(store: PostgresStore) -> None:
    kept = add(store, text("kept")).message.id
    gone = add(store, text("gone")).message.id
    store.outbox.enable()  # queues what is there
    assert store.outbox.pending_ids() == {kept, gone}
    store.outbox.done(store.outbox.claim(limit=10))
    tx = store.begin()
    streamed = tx.reserve(
        Reserve(conversation_id="c", role="assistant"), message_id="s", now=clock.now()
    ).message.id
    tx.update_content(
        UpdateContent(message_id="s", content="he", final=False), now=wall_ms(), expected=None
    )
    tx.commit()
    assert store.outbox.pending_ids() == set()  # placeholders have nothing to index
    tx = store.begin()
    tx.update_content(
        UpdateContent(message_id=streamed, content="hello"), now=wall_ms(), expected=None
    )
    tx.update(Update(message_id=kept, metadata={"k": 1}), now=wall_ms(), expected=None)
    tx.delete(Delete(message_id=gone), expected=None)
    tx.commit()
    items = store.outbox.claim(limit=10)
    assert sorted((i.message_id, i.action) for i in items) == sorted(
        [(streamed, "upsert"), (kept, "payload"), (gone, "delete")]
    )


def test_the_pool_bound_comes_from_the_environment_and_a_bad_one_is_refused(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANCHORLINE_POOL_MAX", "2")
    with PostgresStore(postgres_url) as store:
        assert store.connections.pool.max_size == 2
    monkeypatch.setenv("ANCHORLINE_POOL_MAX", "many")
    with pytest.raises(ConfigurationError, match="ANCHORLINE_POOL_MAX: must be a whole number"):
        PostgresStore(postgres_url)


# A version 1 database as Anchorline 0.2's first PostgreSQL store made it (the tables
# the upgrade reads; the outbox's trigger function is not needed for it).
V1_DDL = """
CREATE SCHEMA anchorline;
CREATE TABLE anchorline.anchorline_meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO anchorline.anchorline_meta
    VALUES ('schema_version', '1'), ('application', 'anchorline');
CREATE TABLE anchorline.messages (
    id TEXT COLLATE "C" PRIMARY KEY, conversation_id TEXT COLLATE "C" NOT NULL,
    role TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL, status TEXT NOT NULL,
    client_message_id TEXT COLLATE "C", created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX messages_by_conversation ON anchorline.messages (conversation_id, created_at, rowid);
CREATE TABLE anchorline.index_outbox (
    message_id TEXT COLLATE "C" PRIMARY KEY, action TEXT NOT NULL, enqueued_at BIGINT NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    next_attempt_at BIGINT NOT NULL DEFAULT 0, lease_until BIGINT NOT NULL DEFAULT 0
);
INSERT INTO anchorline.messages (id, conversation_id, role, content, metadata, status,
                                 client_message_id, created_at, updated_at) VALUES
    ('m2', 'c', 'assistant', '[]', '{}', 'reserved', NULL, 2000, 2000),
    ('m1', 'c', 'user', '"hello"', '{}', 'complete', 'turn-1', 1000, 1000),
    ('m3', 'd', 'user', '"other"', '{}', 'complete', NULL, 1500, 1500);
"""


def test_a_version_1_database_is_numbered_and_gets_the_log(postgres_url: str) -> None:
    sql(postgres_url, V1_DDL)
    with PostgresStore(postgres_url) as store:
        assert [(m.id, m.seq) for m in store.list_messages("c", None)] == [("m1", 1), ("m2", 2)]
        tx = store.begin()
        added = tx.add(
            Add(conversation_id="c", role="user", content="next"),
            message_id=new_message_id(),
            now=clock.now(),
        )
        tx.commit()
        assert added.message.seq == 3
        assert [(c.id, c.message_count) for c in store.conversations(None, None, None)] == [
            ("c", 3),
            ("d", 1),
        ]
        assert [c.message_id for c in store.changes(0, 10)] == [added.message.id]
    version = "SELECT value FROM anchorline.anchorline_meta WHERE key = 'schema_version'"
    assert sql(postgres_url, version) == [("2",)]


@pytest.mark.parametrize(
    "made_before",
    [
        "anchorline.take_seq, anchorline.log_change, anchorline.insert_message,"
        " anchorline.update_content",
        "anchorline.insert_message, anchorline.update_content",
    ],
    ids=["the log functions", "the one-round-trip writes"],
)
def test_a_version_2_database_made_before_its_functions_gets_them(
    postgres_url: str, made_before: str
) -> None:
    PostgresStore(postgres_url).close()
    # As an older Anchorline left it: without those functions, and no record of them.
    sql(postgres_url, f"DROP FUNCTION {made_before}")
    sql(postgres_url, "DELETE FROM anchorline.anchorline_meta WHERE key = 'functions'")
    with Pipeline.open(postgres_url, index="none", load_entrypoints=False) as pipeline:
        added = pipeline.persist(text("after"))  # a lone write: insert_message, alone
        assert added.message.seq == 1
        assert [c.message_id for c in pipeline.changes()] == [added.message.id]
    meta = "SELECT value FROM anchorline.anchorline_meta WHERE key = 'functions'"
    assert sql(postgres_url, meta) == [("3",)]


def test_a_database_with_the_older_feed_functions_gets_the_new_ones(postgres_url: str) -> None:
    from .contract.test_log import writes_after_a_burst

    PostgresStore(postgres_url).close()
    # As the previous Anchorline left it: log_change without the clock, no log_changes.
    sql(
        postgres_url,
        """CREATE OR REPLACE FUNCTION anchorline.log_change(
            kind TEXT, final BOOLEAN, message_id TEXT, conversation TEXT, seq BIGINT, at BIGINT)
        RETURNS VOID LANGUAGE plpgsql AS $$
        DECLARE taken BIGINT;
        BEGIN
            UPDATE anchorline.changes_head SET last = last + 1 WHERE id = 1
            RETURNING last INTO taken;
            INSERT INTO anchorline.changes
                (cursor, kind, final, message_id, conversation_id, seq, at)
            VALUES (taken, kind, final, message_id, conversation, seq, at);
        END
        $$;
        DROP FUNCTION anchorline.log_changes;
        UPDATE anchorline.anchorline_meta SET value = '2' WHERE key = 'functions';""",
    )
    with Pipeline.open(postgres_url, index="none", load_entrypoints=False) as pipeline:
        ats = [c.at for c in writes_after_a_burst(pipeline)]
    assert ats == sorted(ats)
    meta = "SELECT value FROM anchorline.anchorline_meta WHERE key = 'functions'"
    assert sql(postgres_url, meta) == [("3",)]


def test_new_functions_a_user_may_not_create_are_one_line_naming_the_fix(
    postgres_url: str,
) -> None:
    PostgresStore(postgres_url).close()
    sql(postgres_url, "DELETE FROM anchorline.anchorline_meta WHERE key = 'functions'")
    role = f"writer_{dbname(postgres_url)}"
    sql(
        postgres_url,
        f"CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA anchorline TO {role};"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA anchorline TO {role}",
    )
    as_writer = psycopg.conninfo.make_conninfo(postgres_url, user=role)
    try:
        with pytest.raises(IncompatibleStore, match="open it once as the schema's owner") as e:
            PostgresStore(as_writer)
        assert role in str(e.value) and "\n" not in str(e.value)
        PostgresStore(postgres_url).close()  # the owner brings the functions
        with PostgresStore(as_writer) as store:
            assert add(store, text("as the writer")).message.seq == 1
    finally:
        sql(postgres_url, f"DROP OWNED BY {role}; DROP ROLE {role}")
