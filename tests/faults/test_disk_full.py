"""A full disk fails the op with one clear error, writes nothing of it, and blocks nobody."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from anchorline import Add, Pipeline, StorageUnavailable
from anchorline.memory.sqlite import crud
from anchorline.memory.sqlite.store import SQLiteStore

from .conftest import FullDisk, close_within, finishes, full_disk

PAD = "x" * 20_000  # a long message, so a few MB fill up in a few dozen writes


@pytest.fixture(params=["real", "vfs"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    """A real tmpfs (or, where it cannot be mounted, the VFS), and the VFS on its own."""
    with full_disk(tmp_path / "disk", real=request.param == "real") as found:
        yield found


def stored(path: Path) -> dict[str | None, object]:
    conn = apsw.Connection(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {
            key: json.loads(content)
            for key, content in conn.execute("SELECT client_message_id, content FROM messages")
        }
    finally:
        conn.close()


def test_a_full_disk_fails_the_batch_cleanly_and_nothing_hangs(
    disk: FullDisk, figures: list[str]
) -> None:
    db = disk.folder / "full.db"
    pipeline = Pipeline.open(str(db), index="local", vfs=disk.vfs, load_entrypoints=False)
    acknowledged: dict[str | None, object] = {}
    error: StorageUnavailable | None = None
    batch: list[Add] = []
    for i in range(0, 2_000, 2):
        batch = [
            Add(conversation_id="c", role="user", content=f"{k} {PAD}", client_message_id=f"k{k}")
            for k in (i, i + 1)
        ]
        try:
            pipeline.persist_many(batch)
        except StorageUnavailable as e:
            error = e
            break
        acknowledged.update({op.client_message_id: op.content for op in batch})
    assert error is not None, "the disk never filled up"
    message = str(error)
    assert message.startswith("disk full") and str(db) in message and "free space" in message
    assert "\n" not in message
    assert isinstance(error.last_cause, apsw.FullError)

    # The failed commit let go of the store: another thread reads, the indexer
    # drains, and once there is room again another thread writes.
    finishes(lambda: pipeline.messages("c", limit=1), "a read from another thread")
    disk.free()
    after = Add(conversation_id="c", role="user", content="after", client_message_id="after")
    finishes(lambda: pipeline.persist(after), "a write from another thread")
    close_within(pipeline)

    found = stored(db)
    assert {k: v for k, v in found.items() if k != "after"} == acknowledged
    assert found["after"] == "after"
    assert not {op.client_message_id for op in batch} & set(found)  # nothing of the batch
    figures.append(
        f"full disk ({disk.kind}): {len(acknowledged)} acknowledged adds of 20 kB, then"
        " StorageUnavailable('disk full ...'); 0 lost, 0 of the failed batch written,"
        " other threads and close() not blocked"
    )


def test_a_commit_failing_with_a_full_disk_rolls_back_and_lets_other_threads_in(
    tmp_path: Path,
) -> None:
    # The transaction as a unit of work drives it: its writes are done, then COMMIT fails.
    with full_disk(tmp_path / "disk", real=False) as disk:
        store = SQLiteStore(str(disk.folder / "tx.db"), vfs=disk.vfs)
        try:
            tx = store.begin()
            op = Add(conversation_id="c", role="user", content=PAD * 100, message_id="m1")
            tx.run(lambda conn: crud.add_message(conn, op))
            with pytest.raises(StorageUnavailable, match="disk full"):
                tx.commit()
            assert not store.conn.in_transaction
            read = finishes(lambda: store.read(lambda c: crud.get_message(c, "m1")), "a read")
            assert read is None  # rolled back
            disk.free()
            finishes(lambda: store.write(lambda c: crud.add_message(c, op)), "a write")
        finally:
            finishes(store.close, "SQLiteStore.close()")
