"""Transient SQLITE_IOERR and SQLITE_BUSY injected into writes and syncs are absorbed by retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from anchorline import Add, Pipeline, Reserve, RetryPolicy, StorageUnavailable, UpdateContent

from ..support.fault_vfs import FaultVFS
from .conftest import knob

POLICY = RetryPolicy(initial_backoff=0.0005, max_backoff=0.005, max_attempts=200, deadline=60)


@pytest.fixture
def vfs() -> Iterator[FaultVFS]:
    shim = FaultVFS("anchorline-faults", seed=knob("FAULT_SEED", 7))
    yield shim
    shim.unregister()


def check_integrity(path: Path) -> dict[str, object]:
    conn = apsw.Connection(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        return {
            row[0]: json.loads(row[1]) for row in conn.execute("SELECT id, content FROM messages")
        }
    finally:
        conn.close()


def test_transient_faults_are_retried_and_nothing_is_lost(
    tmp_path: Path, vfs: FaultVFS, figures: list[str]
) -> None:
    path = tmp_path / "faulty.db"
    rate = knob("FAULT_RATE_PERCENT", 8) / 100
    ops = knob("FAULT_OPS", 600)
    acknowledged: dict[str, object] = {}
    with Pipeline.open(str(path), vfs=vfs.name, retry=POLICY, load_entrypoints=False) as pipeline:
        vfs.rate = rate
        current = ""
        for i in range(ops):
            if i % 3 == 0:
                added = pipeline.persist(Add(conversation_id="c", role="user", content=f"user {i}"))
                acknowledged[added.message.id] = f"user {i}"
            elif i % 3 == 1:
                current = pipeline.persist(
                    Reserve(conversation_id="c", role="assistant")
                ).message.id
                acknowledged[current] = []
            else:
                pipeline.persist_many(
                    [
                        UpdateContent(message_id=current, content=f"part {i}", final=False),
                        UpdateContent(message_id=current, content=f"answer {i}"),
                    ]
                )
                acknowledged[current] = f"answer {i}"
        vfs.rate = 0
    injected = vfs.injected["io"] + vfs.injected["busy"]
    assert injected > ops / 10, "the shim must really have injected faults"
    stored = check_integrity(path)
    assert stored == acknowledged  # every acknowledged op, exactly as acknowledged, nothing else
    figures.append(
        f"I/O faults: {ops} ops at {rate:.0%} per write/sync, {vfs.injected['io']} SQLITE_IOERR +"
        f" {vfs.injected['busy']} SQLITE_BUSY injected over {vfs.calls} calls;"
        " 0 lost, 0 duplicated, integrity ok"
    )


def test_a_persistent_fault_raises_storage_unavailable_and_leaves_no_trace(
    tmp_path: Path, vfs: FaultVFS
) -> None:
    path = tmp_path / "dead.db"
    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, max_attempts=5, deadline=5)
    with Pipeline.open(str(path), vfs=vfs.name, retry=policy, load_entrypoints=False) as pipeline:
        kept = pipeline.persist(Add(conversation_id="c", role="user", content="before")).message.id
        vfs.rate = 1.0
        with pytest.raises(StorageUnavailable) as info:
            pipeline.persist_many(
                [
                    Add(conversation_id="c", role="user", content="lost 1", message_id="x1"),
                    Add(conversation_id="new", role="user", content="lost 2", message_id="x2"),
                ]
            )
        assert info.value.attempts == 5
        assert isinstance(info.value.last_cause, apsw.IOError | apsw.BusyError)
        vfs.rate = 0
        # The same pipeline recovers once the disk does.
        after = pipeline.persist(Add(conversation_id="c", role="user", content="after")).message.id
    stored = check_integrity(path)
    assert set(stored) == {kept, after}
    conn = apsw.Connection(str(path))
    assert conn.execute("SELECT DISTINCT conversation_id FROM messages").fetchall() == [("c",)]
    conn.close()
