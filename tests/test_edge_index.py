"""The embedded index on Qdrant Edge: one process per folder, a cache of the store."""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anchorline import Add, ConfigurationError, IndexBusy, Pipeline
from anchorline.memory.index.embedders import HashingEmbedder
from anchorline.memory.index.sync import IndexSync, payload
from anchorline.memory.index.vector_index import Point, VectorIndex, point_id
from anchorline.plugins.indexer import Indexer


def indexer(pipeline: Pipeline) -> Indexer:
    found = pipeline.plugin_manager.get_plugin("indexer")
    assert isinstance(found, Indexer)
    return found


def write_messages(db: Path, count: int) -> dict[str, str]:
    """``count`` messages in two conversations, indexed elsewhere (so none waits to be
    indexed in the database); their text by id."""
    texts = {}
    with Pipeline.open(
        str(db), index=":memory:", index_sync=True, load_entrypoints=False
    ) as pipeline:
        for i in range(count):
            text = f"note {i} about {'flights' if i % 2 else 'hotels'} number{i}"
            message = pipeline.persist(
                Add(conversation_id=f"c{i % 2}", role="user", content=text)
            ).message
            texts[message.id] = text
    return texts


def found_by_own_text(pipeline: Pipeline, texts: dict[str, str]) -> set[str]:
    """The messages that come first when searched for by their own text."""
    found = set()
    for message_id, text in texts.items():
        hits = pipeline.search(text, limit=1)
        if hits and hits[0].message.id == message_id:
            found.add(message_id)
    return found


# --- one process per folder --------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from anchorline.memory.index.vector_index import Point, VectorIndex
    index = VectorIndex(sys.argv[1], model="m", dimension=4, linger=600)
    index.upsert([Point("first", [1.0, 0.0, 0.0, 0.0], {"message_id": "first"})])
    index.flush()
    print("holding", flush=True)
    sys.stdin.readline()  # the other process tries the folder meanwhile
    index.upsert([Point("second", [0.0, 1.0, 0.0, 0.0], {"message_id": "second"})])
    index.flush()
    index.close()
    print("closed", flush=True)
    """
)


@pytest.mark.parametrize(
    "name", ["chat.db.index", "a-folder-name-longer-than-a-socket-address-" * 3]
)
def test_a_second_process_is_refused_writes_answered_reads_and_leaves_the_holders_writes_whole(
    tmp_path: Path, name: str
) -> None:
    folder = tmp_path / name
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "holding"
        other = VectorIndex(str(folder), model="m", dimension=4, wait=0.3)
        with pytest.raises(IndexBusy, match=f"process {holder.pid}"):
            other.upsert([Point("third", [0.0, 0.0, 1.0, 0.0], {"message_id": "third"})])
        # A read is answered by the holder, on its open shard.
        assert other.count() == 1
        assert other.search([1.0, 0.0, 0.0, 0.0], limit=5) == [("first", pytest.approx(1.0))]
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
        assert out.strip() == "closed"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    assert (folder / "edge_config.json").is_file()  # a Qdrant Edge shard
    # The holder's flush after the refused attempt kept both of its points.
    assert other.message_ids() == {"first", "second"}
    assert other.search([0.0, 1.0, 0.0, 0.0], limit=1) == [("second", pytest.approx(1.0))]
    other.close()


# --- a cache of the store: rebuilt when it cannot be used ---------------------


def make_local_mode_folder(folder: Path, db: Path, texts: dict[str, str]) -> None:
    """The folder the embedded index of an earlier Anchorline made (qdrant-client local
    mode), holding every message's point."""
    from qdrant_client import QdrantClient, models

    embedder = HashingEmbedder()
    client = QdrantClient(path=str(folder))
    collection = f"anchorline_{embedder.name}"
    client.create_collection(
        collection, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    with Pipeline.open(str(db), index=None, load_entrypoints=False) as pipeline:
        messages = [m for c in ("c0", "c1") for m in pipeline.messages(c)]
    vectors = embedder.embed([texts[m.id] for m in messages])
    client.upsert(
        collection,
        points=[
            models.PointStruct(id=point_id(m.id), vector=v, payload=payload(m))
            for m, v in zip(messages, vectors, strict=True)
        ],
    )
    client.close()
    assert (folder / "meta.json").is_file() and (folder / "collection").is_dir()


def test_a_folder_of_the_earlier_local_mode_is_rebuilt_as_edge_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="anchorline")
    db = tmp_path / "chat.db"
    folder = tmp_path / "chat.db.index"
    texts = write_messages(db, 60)
    make_local_mode_folder(folder, db, texts)
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=60)
        assert found_by_own_text(pipeline, texts) == set(texts)
        assert indexer(pipeline).doctor().clean
    assert (folder / "edge_config.json").is_file()
    assert not (folder / "meta.json").exists() and not (folder / "collection").exists()
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("earlier Anchorline" in line for line in said)
    assert any("queued 60 complete message(s)" in line for line in said)
    told = [r.getMessage() for r in caplog.records]  # quick: at INFO, with no progress lines
    assert any("refilled from the database: 60 message(s)" in line for line in told), told


def test_a_long_refill_says_how_far_it_has_got(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anchorline.memory.index.sync as sync_module

    monkeypatch.setattr(sync_module, "BATCH", 64)
    monkeypatch.setattr(sync_module, "ACK_EVERY", 16)  # one ack per batch of 64
    monkeypatch.setattr(IndexSync, "progress_every", 0.0)  # as if each batch took long
    db = tmp_path / "chat.db"
    write_messages(db, 100)
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as p:
        p.flush_index(timeout=60)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    folder = tmp_path / "chat.db.index"
    assert f"refilling index {folder} from the database: 64 of 100 message(s)" in said
    assert any(f"index {folder} refilled from the database: 100 message(s)" in s for s in said)


def garble_config(folder: Path) -> None:
    (folder / "edge_config.json").write_text("garbage")


def garble_segments(folder: Path) -> None:
    for path in (folder / "segments").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")


def drop_meta(folder: Path) -> None:
    (folder / "anchorline-index.json").unlink()


@pytest.mark.parametrize("damage", [garble_config, garble_segments, drop_meta])
def test_an_unreadable_folder_is_rebuilt_from_the_store_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    db = tmp_path / "chat.db"
    folder = tmp_path / "chat.db.index"
    texts = write_messages(db, 40)
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as p:
        p.flush_index(timeout=60)
        assert indexer(p).index.count() == 40  # type: ignore[union-attr]
    assert callable(damage)
    damage(folder)
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=60)
        assert found_by_own_text(pipeline, texts) == set(texts)
        report = indexer(pipeline).doctor()
        assert report.clean and report.points == 40, report
    assert any("rebuilding it from the database" in r.getMessage() for r in caplog.records)


# --- the embedder the index was built with -----------------------------------


def test_another_embedder_is_refused_until_reindex_rebuilds_the_folder(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hotel booking"))
        assert pipeline.search("hotel")
    other = HashingEmbedder(dimension=256)
    with Pipeline.open(
        db, index="local", index_sync=True, embedder=other, load_entrypoints=False
    ) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="flight gate"))
        with pytest.raises(ConfigurationError) as raised:
            pipeline.search("hotel")
        message = str(raised.value)
        assert "'hashing-v1-384' (dimension 384)" in message
        assert "'hashing-v1-256' (dimension 256)" in message
        assert "anchorline reindex" in message
        with pytest.raises(ConfigurationError, match="anchorline reindex"):
            pipeline.flush_index(timeout=5)
        assert pipeline.index_status().pending == 1  # kept for after the reindex
        assert indexer(pipeline).reindex() == 2
        assert [h.message.content for h in pipeline.search("flight gate", limit=1)] == [
            "flight gate"
        ]
        assert indexer(pipeline).doctor().clean
    meta = json.loads((tmp_path / "chat.db.index" / "anchorline-index.json").read_text())
    assert meta == {"embedder": "hashing-v1-256", "dimension": 256}


def test_the_cli_names_both_embedders_and_reindex_rebuilds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchorline.cli import main

    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hotel booking"))
    folder = tmp_path / "chat.db.index"
    meta = folder / "anchorline-index.json"
    meta.write_text(json.dumps({"embedder": "some-model", "dimension": 384}))
    assert main(["--db", db, "search", "hotel"]) == 1
    err = capsys.readouterr().err
    assert "'some-model' (dimension 384)" in err and "'hashing-v1-384'" in err
    assert "anchorline reindex" in err and err.count("\n") == 1
    assert main(["--db", db, "reindex"]) == 0
    assert capsys.readouterr().err == ""  # no warning: the index is rebuilt, not checked
    assert main(["--db", db, "search", "hotel"]) == 0
    assert "hotel booking" in capsys.readouterr().out


# --- search -------------------------------------------------------------------


def test_exact_search_has_full_recall_at_10_against_brute_force(tmp_path: Path) -> None:
    rng = random.Random(7)
    dimension = 32
    vectors = {f"m{i}": [rng.gauss(0, 1) for _ in range(dimension)] for i in range(400)}
    index = VectorIndex(str(tmp_path / "index"), model="random", dimension=dimension)
    index.upsert(
        [
            Point(m, v, {"message_id": m, "conversation_id": f"c{i % 4}"})
            for i, (m, v) in enumerate(vectors.items())
        ]
    )

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    found = total = 0
    for _ in range(30):
        query = [rng.gauss(0, 1) for _ in range(dimension)]
        conversation = rng.choice([None, "c1"])
        candidates = [m for i, m in enumerate(vectors) if conversation is None or i % 4 == 1]
        truth = sorted(candidates, key=lambda m: -cosine(query, vectors[m]))[:10]
        hits = index.search(query, conversation_id=conversation, limit=10)
        found += len({m for m, _ in hits} & set(truth))
        total += len(truth)
        best, score = hits[0]
        assert best == truth[0] and score == pytest.approx(cosine(query, vectors[best]), abs=1e-5)
    index.close()
    assert found == total  # recall@10 of 1.0: exact, not approximate


def test_search_within_a_conversation_finds_only_its_messages(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    texts = write_messages(db, 50)
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=60)
        hits = pipeline.search("note about flights", conversation_id="c0", limit=50)
        assert len(hits) == 25 and {h.message.conversation_id for h in hits} == {"c0"}
        assert {h.message.id for h in hits} < set(texts)


# --- anchorline index optimize ------------------------------------------------


def test_index_optimize_builds_the_graph_and_search_still_finds_every_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchorline.cli import main

    db = tmp_path / "chat.db"
    texts = write_messages(db, 30)
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=60)
        holder = indexer(pipeline).index
        assert holder is not None
        with holder.session():  # this process holds the folder: the optimizer must wait
            assert main(["index", "optimize", str(db)]) == 1
            assert "is held by process" in capsys.readouterr().err
    assert main(["index", "optimize", str(db)]) == 0
    # 30 points are searched as fast without a graph: there is nothing to build.
    said = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert said.startswith(f"{db}.index: nothing to optimize")
    with Pipeline.open(str(db), index="local", load_entrypoints=False) as pipeline:
        assert found_by_own_text(pipeline, texts) == set(texts)
    assert main(["index", "optimize", str(tmp_path / "none.db")]) == 1
    assert "anchorline reindex" in capsys.readouterr().err


# --- a disk nearly full ---------------------------------------------------------


def test_a_nearly_full_disk_holds_indexing_back_with_an_error_instead_of_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anchorline.memory.index.edge_index as edge_index

    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="written with room"))
        # As if the disk had less free space than the index needs to write safely.
        monkeypatch.setattr(edge_index, "MIN_FREE_BYTES", 1 << 62)
        pipeline.persist(Add(conversation_id="c", role="user", content="written when full"))
        status = pipeline.index_status()
        assert status.pending == 1 and status.last_error is not None
        assert "MB free on its disk" in status.last_error
        assert "free some space" in status.last_error
        assert len(pipeline.messages("c")) == 2  # the write itself landed
        monkeypatch.setattr(edge_index, "MIN_FREE_BYTES", 0)  # space freed
        pipeline.flush_index(timeout=30)
        assert len(pipeline.search("written", limit=10)) == 2


def test_a_server_collection_of_another_dimension_is_refused_with_reindex_named() -> None:
    built = VectorIndex(":memory:", model="m", dimension=8)
    built.upsert([Point("a", [1.0] * 8, {"message_id": "a"})])
    # Another pipeline's embedder, same name, other dimension, on the same Qdrant.
    other = VectorIndex(":memory:", model="m", dimension=4)
    other._client = built._client  # one Qdrant for both, as a server would be
    with pytest.raises(ConfigurationError, match=r"dimension 8.*'m' \(dimension 4\)"):
        other.count()
    other.recreate()  # what anchorline reindex does
    assert other.count() == 0
    other.upsert([Point("b", [1.0] * 4, {"message_id": "b"})])
    assert other.message_ids() == {"b"}
    built.close()
