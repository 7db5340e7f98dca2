"""The intent to index is as durable as the message: crashes and outages lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import apsw
import pytest

from anchorline import Add, Delete, IndexBusy, IndexUnavailable, Pipeline, Reserve, UpdateContent
from anchorline.memory.index.vector_index import VectorIndex
from anchorline.plugins.indexer import Indexer


def indexer(pipeline: Pipeline) -> Indexer:
    found = pipeline.plugin_manager.get_plugin("indexer")
    assert isinstance(found, Indexer)
    return found


def indexable_ids(path: Path) -> set[str]:
    conn = apsw.Connection(str(path))
    try:
        return {row[0] for row in conn.execute("SELECT id FROM messages WHERE status = 'complete'")}
    finally:
        conn.close()


CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from anchorline.memory.index.embedders import HashingEmbedder
    from anchorline import Add, Pipeline, Reserve, UpdateContent

    class Stuck(HashingEmbedder):
        # Same name, so the same collection: but it never returns, so nothing is drained.
        def embed(self, texts):
            time.sleep(3600)

    pipeline = Pipeline.open(sys.argv[1], index="local", embedder=Stuck(), load_entrypoints=False)
    for i in range(20):
        pipeline.persist(Add(conversation_id="c", role="user", content=f"note {i} about crashes"))
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    pipeline.persist(UpdateContent(message_id=mid, content="half", final=False))
    print("committed", flush=True)
    time.sleep(3600)
    """
)


def test_work_committed_before_a_crash_is_drained_on_the_next_open(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "committed"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        assert pipeline.index_status().pending == 20  # nothing was drained before the kill
        pipeline.flush_index(timeout=60)
        index = indexer(pipeline).index
        assert index is not None
        assert index.message_ids() == indexable_ids(db)
        assert len(index.message_ids()) == 20  # the partial placeholder is not there


def test_background_worker_drains_pending_work_on_open(tmp_path: Path) -> None:
    db = tmp_path / "bg.db"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        # Stop indexing without losing the intents: the outbox keeps them.
        indexer(pipeline).drain = lambda **_: 0  # type: ignore[method-assign]
        for i in range(5):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"pending {i}"))
        assert pipeline.index_status().pending == 5
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        deadline = time.monotonic() + 30
        while pipeline.index_status().pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.index_status().pending == 0
        assert len(pipeline.search("pending", limit=10)) == 5


class Outage:
    """Fault injection: the index raises until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def __call__(self, real: object) -> object:
        def method(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if not self.up:
                raise ConnectionError("qdrant is down")
            return real(*args, **kwargs)  # type: ignore[operator]

        return method


def test_an_index_outage_fails_no_write_and_drains_after_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage()
    monkeypatch.setattr(VectorIndex, "upsert", outage(VectorIndex.upsert))
    monkeypatch.setattr(VectorIndex, "delete", outage(VectorIndex.delete))
    db = tmp_path / "down.db"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        ids = [
            pipeline.persist(Add(conversation_id="c", role="user", content=f"kept {i}")).message.id
            for i in range(10)
        ]
        mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
        pipeline.persist(UpdateContent(message_id=mid, content="streamed while down"))
        pipeline.persist(Delete(message_id=ids[0]))
        assert outage.calls > 0  # the index really was tried, and failed
        status = pipeline.index_status()
        assert status.pending == 11  # 9 adds + 1 final + 1 delete
        assert (
            status.failing >= 1
            and status.last_error is not None
            and "qdrant is down" in status.last_error
        )
        with pytest.raises(IndexUnavailable, match="qdrant is down"):
            pipeline.flush_index()
        assert len(pipeline.messages("c")) == 10  # every write landed
        outage.up = True
        pipeline.flush_index(timeout=30)
        assert pipeline.index_status().pending == 0
        index = indexer(pipeline).index
        assert index is not None
        assert index.message_ids() == indexable_ids(db)
        assert ids[0] not in index.message_ids()


def test_flush_with_a_timeout_reports_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage()
    monkeypatch.setattr(VectorIndex, "upsert", outage(VectorIndex.upsert))
    with Pipeline.open(
        str(tmp_path / "t.db"), index=":memory:", index_sync=True, load_entrypoints=False
    ) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="x"))
        started = time.monotonic()
        with pytest.raises(IndexUnavailable, match="1 message"):
            pipeline.flush_index(timeout=0.5)
        assert time.monotonic() - started < 5


def test_a_slow_index_does_not_slow_persist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default background worker, persist returns while the index hangs."""
    real_upsert = VectorIndex.upsert
    release = __import__("threading").Event()

    def hanging(self: VectorIndex, points: Sequence[object]) -> None:
        release.wait(30)
        real_upsert(self, points)  # type: ignore[arg-type]

    monkeypatch.setattr(VectorIndex, "upsert", hanging)
    with Pipeline.open(str(tmp_path / "t.db"), index="local", load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="first"))
        time.sleep(0.2)  # the worker is now stuck in upsert
        for i in range(20):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"more {i}"))
        assert len(pipeline.messages("c")) == 21
        release.set()
        pipeline.flush_index(timeout=30)
        assert pipeline.index_status().pending == 0


def test_reindex_restores_an_emptied_index_and_doctor_is_clean(tmp_path: Path) -> None:
    db = tmp_path / "re.db"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        for i in range(30):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"message {i}"))
        pipeline.persist(Reserve(conversation_id="c", role="assistant"))
        ix = indexer(pipeline)
        assert ix.index is not None
        before = ix.index.count()
        ix.index.recreate()  # the index is lost
        report = ix.doctor()
        assert not report.clean and len(report.missing) == 30
        assert ix.reindex() == 30
        assert ix.index.count() == before == 30
        report = ix.doctor()
        assert report.clean and report.indexable == report.points == 30


def test_an_interrupted_reindex_resumes(tmp_path: Path) -> None:
    db = tmp_path / "resume.db"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        for i in range(600):
            pipeline.persist_many([Add(conversation_id="c", role="user", content=f"message {i}")])
        ix = indexer(pipeline)
        seen: list[int] = []

        def interrupt(done: int, total: int) -> None:
            seen.append(done)
            if done > 0:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ix.reindex(interrupt)
        left = pipeline.index_status().pending
        assert 0 < left < 600
        resumed: list[tuple[int, int]] = []
        ix.reindex(lambda done, total: resumed.append((done, total)))
        assert resumed[0][1] == left  # it picked up the rest, not all 600 again
        assert ix.index is not None and ix.index.count() == 600
        assert ix.doctor().clean


TWO_PROCESS_WRITER = textwrap.dedent(
    """
    import sys
    from anchorline import Add, Pipeline
    name, db = sys.argv[1], sys.argv[2]
    with Pipeline.open(db, index="local", load_entrypoints=False) as pipeline:
        for i in range(40):
            pipeline.persist(Add(conversation_id=name, role="user", content=f"{name} says {i}"))
        pipeline.flush_index(timeout=60)  # the other process may hold the folder for a while
        hits = pipeline.search(f"{name} says", conversation_id=name, limit=5)
        assert hits and all(h.message.conversation_id == name for h in hits), hits
    print("ok", flush=True)
    """
)


def test_two_processes_share_one_database_with_the_index_on(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESS_WRITER, name, str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("alpha", "beta")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=60)
        index = indexer(pipeline).index
        assert index is not None
        assert index.message_ids() == indexable_ids(db)
        assert len(index.message_ids()) == 80


HOLDER = textwrap.dedent(
    """
    import sys, time
    from anchorline import Pipeline
    pipeline = Pipeline.open(sys.argv[1], index="local", index_sync=True, load_entrypoints=False)
    with pipeline.plugin_manager.get_plugin("indexer").index.session():
        print("holding", flush=True)
        time.sleep(3600)
    """
)


def test_a_folder_held_too_long_by_another_process_is_named_in_the_error(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with Pipeline.open(
            str(db), index="local", index_sync=True, load_entrypoints=False
        ) as pipeline:
            pipeline.persist(Add(conversation_id="c", role="user", content="written while held"))
            index = indexer(pipeline).index
            assert index is not None
            index.wait = 0.3
            with pytest.raises(IndexBusy, match=f"process {holder.pid}"):
                pipeline.search("written")
            assert pipeline.index_status().pending == 1  # the write waits for its turn
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=30)  # the lock died with the holder
        assert [h.message.content for h in pipeline.search("written")] == ["written while held"]


IDLE_WRITER = textwrap.dedent(
    """
    import sys, time
    from anchorline import Add, Pipeline
    pipeline = Pipeline.open(sys.argv[1], index="local", index_sync=True, load_entrypoints=False)
    pipeline.indexer().index.linger = float(sys.argv[2])
    pipeline.persist(Add(conversation_id="c", role="user", content="written then idle"))
    print("written", flush=True)
    time.sleep(3600)  # open, idle, and alive
    """
)


def test_a_sync_pipeline_lets_go_of_the_folder_once_idle(tmp_path: Path) -> None:
    db = tmp_path / "idle.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", IDLE_WRITER, str(db), "0.2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "written"
        with Pipeline.open(
            str(db), index="local", index_sync=True, load_entrypoints=False
        ) as pipeline:
            # Waits (10 s at most) until the writer has been idle 0.2 s and released it.
            hits = pipeline.search("written idle")
            assert [h.message.content for h in hits] == ["written then idle"]
        assert writer.poll() is None  # released by a live process, not freed by its death
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def test_an_unreachable_qdrant_server_keeps_every_write_pending(tmp_path: Path) -> None:
    # A real qdrant-client pointed at a closed port: the scale-out mode while the server is down.
    with Pipeline.open(
        str(tmp_path / "url.db"),
        index="http://127.0.0.1:9",
        index_sync=True,
        load_entrypoints=False,
    ) as pipeline:
        for i in range(3):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"kept {i}"))
        status = pipeline.index_status()
        assert status.pending == 3 and status.failing == 3
        assert status.last_error is not None
        assert len(pipeline.messages("c")) == 3
        with pytest.raises(IndexUnavailable):
            pipeline.flush_index()
