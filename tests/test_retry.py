"""The SQLite store waits out a busy database under its retry policy."""

from __future__ import annotations

import threading
import time

import apsw
import pytest

from anchorline import Add, Pipeline, RetryPolicy, StorageUnavailable

FAST = RetryPolicy(
    busy_timeout=0.05, initial_backoff=0.01, max_backoff=0.05, deadline=1.0, max_attempts=100
)


def hold_write_lock(path: str, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another connection takes the write lock and keeps it for ``seconds``."""
    taken = threading.Event()

    def run() -> None:
        conn = apsw.Connection(path)
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    taken.wait()
    return thread, taken


def count(path: str) -> int:
    conn = apsw.Connection(path)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def test_a_lock_held_for_less_than_the_deadline_is_waited_out(db_path: str) -> None:
    with Pipeline.open(db_path, retry=FAST, load_entrypoints=False) as pipeline:
        thread, _ = hold_write_lock(db_path, 0.4)
        started = time.monotonic()
        result = pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        waited = time.monotonic() - started
        thread.join()
        assert pipeline.get(result.message.id) is not None
    assert waited >= 0.3  # it really was blocked, and got through
    assert count(db_path) == 1


def test_a_lock_held_past_the_deadline_raises_storage_unavailable(db_path: str) -> None:
    policy = RetryPolicy(
        busy_timeout=0.05, initial_backoff=0.01, max_backoff=0.05, deadline=0.5, max_attempts=100
    )
    with Pipeline.open(db_path, retry=policy, load_entrypoints=False) as pipeline:
        thread, _ = hold_write_lock(db_path, 1.5)
        with pytest.raises(StorageUnavailable) as info:
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        thread.join()
        error = info.value
        assert isinstance(error, OSError)
        assert error.attempts > 1
        assert isinstance(error.last_cause, apsw.BusyError)
        # Nothing of the op was written, and the pipeline works again once the lock is gone.
        assert count(db_path) == 0
        pipeline.persist(Add(conversation_id="c", role="user", content="after"))
    assert count(db_path) == 1


def test_max_attempts_bounds_the_retries(db_path: str) -> None:
    policy = RetryPolicy(
        busy_timeout=0.02, initial_backoff=0.01, max_backoff=0.01, deadline=30, max_attempts=3
    )
    with Pipeline.open(db_path, retry=policy, load_entrypoints=False) as pipeline:
        thread, _ = hold_write_lock(db_path, 1.0)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        assert time.monotonic() - started < 0.9
        thread.join()
    assert info.value.attempts == 3


def test_persist_many_waits_too_and_commits_everything(db_path: str) -> None:
    with Pipeline.open(db_path, retry=FAST, load_entrypoints=False) as pipeline:
        thread, _ = hold_write_lock(db_path, 0.3)
        pipeline.persist_many(
            [Add(conversation_id="c", role="user", content=str(i)) for i in range(10)]
        )
        thread.join()
    assert count(db_path) == 10


def test_the_policy_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)


def test_the_connection_sets_a_busy_timeout(db_path: str) -> None:
    with Pipeline.open(
        db_path, retry=RetryPolicy(busy_timeout=1.5), load_entrypoints=False
    ) as pipeline:
        conn = pipeline.plugin_manager.get_plugin("terminal").store.conn
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_opening_a_new_file_waits_out_another_writer(db_path: str) -> None:
    thread, _ = hold_write_lock(db_path, 0.3)  # e.g. another process creating the schema
    with Pipeline.open(db_path, retry=FAST, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    thread.join()
    assert count(db_path) == 1


@pytest.mark.parametrize("stage", ["write", "commit"])
def test_a_storage_error_in_a_write_is_one_line_and_lets_other_threads_in(
    db_path: str, stage: str
) -> None:
    from anchorline.memory.sqlite.store import SQLiteStore

    def fail(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO anchorline_meta VALUES ('probe', '1')")
        if stage == "write":
            raise apsw.CorruptError("database disk image is malformed")  # an injected fault
        # A deferred constraint fails only at COMMIT.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("CREATE TABLE IF NOT EXISTS child (p REFERENCES anchorline_meta(key))")
        conn.execute("INSERT INTO child VALUES ('no such key')")

    store = SQLiteStore(db_path)
    with pytest.raises(StorageUnavailable) as info:
        store.write(fail)
    message = str(info.value)
    assert db_path in message and "\n" not in message
    assert isinstance(info.value.last_cause, apsw.Error)
    # Rolled back, and the lock is free for another thread.
    probe: list[object] = []
    reader = threading.Thread(
        target=lambda: probe.append(
            store.read(
                lambda c: c.execute("SELECT 1 FROM anchorline_meta WHERE key = 'probe'").fetchall()
            )
        ),
        daemon=True,
    )
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "another thread is still locked out of the store"
    assert probe == [[]]
    store.close()


def test_a_refused_op_is_not_replayed_when_a_later_op_in_its_transaction_is_retried(
    db_path: str,
) -> None:
    from anchorline import Conflict, Update
    from anchorline.memory.sqlite import crud
    from anchorline.memory.sqlite.store import SQLiteStore

    store = SQLiteStore(db_path, RetryPolicy(initial_backoff=0.001, jitter=False))
    try:
        first = Add(conversation_id="c", role="user", content="one")
        store.write(lambda c: crud.add_message(c, first, message_id="m1", now=1))

        def refused(c: apsw.Connection) -> object:
            return crud.update_message_metadata(
                c, Update(message_id="m1", metadata={"k": 1}), expect_updated_at=999
            )

        busy_once = [True]

        def second(c: apsw.Connection) -> object:
            if busy_once.pop() if busy_once else False:
                raise apsw.BusyError("injected: database is locked")
            return crud.add_message(
                c, Add(conversation_id="c", role="user", content="two"), message_id="m2", now=2
            )

        tx = store.begin()
        with pytest.raises(Conflict):
            tx.run(refused)
        tx.run(second)  # retried: the replay must not run the refused op again
        tx.commit()
        assert [m.content for m in store.read(lambda c: crud.list_messages(c, "c"))] == [
            "one",
            "two",
        ]
    finally:
        store.close()
