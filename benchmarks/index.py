"""``anchorline bench --index``: the embedded index, Qdrant Edge against qdrant-client's
local mode (the embedded index before it), in the same run.

For each size, both hold the same points (hashing embedder, dimension 384,
200 messages per conversation) in a folder: search top 10, unfiltered and
within one conversation, and reopening the folder. The catch-up case times a
burst of adds through the pipeline until the indexer has drained them all:
into an Edge folder, and into qdrant-client's local mode in memory (its
folders are slower still: a commit per point).

qdrant-client's local mode commits each point on its own (about 100-500
points/s), so its folder is filled here in one transaction of the rows it
would have written, and then opened as it always is.
"""

from __future__ import annotations

import pickle
import random
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anchorline.memory.index.embedders import HashingEmbedder
from anchorline.memory.index.vector_index import Point, VectorIndex, point_id
from anchorline.ops import Add
from anchorline.runner import Pipeline

from .rounds import Case, Comparison, Run, ready
from .search import QUERIES, WORDS
from .workloads import fresh, size_label

PER_CONVERSATION = 200
BATCH = 1000
EDGE = "Qdrant Edge"
LOCAL = "local mode"


def texts(size: int) -> list[str]:
    rng = random.Random(size)
    return [" ".join(rng.choices(WORDS, k=12)) for _ in range(size)]


def _payload(i: int) -> dict[str, Any]:
    return {"message_id": f"m{i}", "conversation_id": f"c{i // PER_CONVERSATION}", "role": "user"}


def build_edge(folder: Path, vectors: list[list[float]]) -> VectorIndex:
    shutil.rmtree(folder, ignore_errors=True)
    index = VectorIndex(str(folder), model="hashing-v1-384", dimension=384, linger=3600)
    for start in range(0, len(vectors), BATCH):
        index.upsert(
            [Point(f"m{i}", vectors[i], _payload(i))
             for i in range(start, min(len(vectors), start + BATCH))]
        )  # fmt: skip
    index.flush()
    return index


def build_local_mode(folder: Path, vectors: list[list[float]]) -> None:
    """A qdrant-client local-mode folder holding ``vectors``, as its upserts would leave it."""
    from qdrant_client import QdrantClient, models
    from qdrant_client.local.persistence import CollectionPersistence

    shutil.rmtree(folder, ignore_errors=True)
    client = QdrantClient(path=str(folder))
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    client.close()
    storage = CollectionPersistence(str(folder / "collection" / "bench"))
    rows = [
        (
            CollectionPersistence.encode_key(point_id(f"m{i}")),
            pickle.dumps(models.PointStruct(id=point_id(f"m{i}"), vector=v, payload=_payload(i))),
        )
        for i, v in enumerate(vectors)
    ]
    with storage.storage:
        storage.storage.executemany("INSERT OR REPLACE INTO points VALUES (?, ?)", rows)
    storage.close()


class LocalMode:
    """qdrant-client's local mode on one folder: the embedded index before Qdrant Edge."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.client: Any = None

    def open(self) -> int:
        """Open the folder (loading every point); how many points it holds."""
        from qdrant_client import QdrantClient

        with warnings.catch_warnings():
            # It advises a server above 20k points; the bench measures why.
            warnings.filterwarnings("ignore", message="Local mode is not recommended")
            self.client = QdrantClient(path=str(self.folder))
        return int(self.client.count("bench", exact=True).count)

    def search(self, vector: list[float], conversation_id: str | None) -> int:
        from qdrant_client import models

        where = None
        if conversation_id is not None:
            match = models.MatchValue(value=conversation_id)
            where = models.Filter(must=[models.FieldCondition(key="conversation_id", match=match)])
        return len(
            self.client.query_points("bench", query=vector, query_filter=where, limit=10).points
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _searches(search: Callable[[list[float], str | None], object],
              queries: list[list[float]], conversation: str | None) -> Run:  # fmt: skip
    def run(count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            search(queries[i % len(queries)], conversation)
        return time.perf_counter() - started

    return run


def index_cases(workdir: Path, sizes: tuple[int, ...], queries: int, adds: int,
                progress: Callable[[str], None] | None = None,
                ) -> tuple[list[Case], list[Comparison], list[Callable[[], None]]]:  # fmt: skip
    embedder = HashingEmbedder()
    query_vectors = embedder.embed(QUERIES)
    cases: list[Case] = []
    comparisons: list[Comparison] = []
    closers: list[Callable[[], None]] = []
    if progress and sizes:
        progress(f"embedding {max(sizes):,} texts")
    vectors = embedder.embed(texts(max(sizes))) if sizes else []
    for size in sizes:
        label = size_label(size)
        if progress:
            progress(f"filling a Qdrant Edge folder with {size:,} points")
        edge = build_edge(workdir / f"edge-{size}", vectors[:size])
        closers.append(edge.close)
        if progress:
            progress(f"filling a local-mode folder with {size:,} points")
        build_local_mode(workdir / f"local-{size}", vectors[:size])
        local = LocalMode(workdir / f"local-{size}")
        local.open()
        closers.append(local.close)
        middle = f"c{size // PER_CONVERSATION // 2}"

        def edge_search(vector: list[float], conversation: str | None,
                        edge: VectorIndex = edge) -> object:  # fmt: skip
            return edge.search(vector, conversation_id=conversation, limit=10)

        def edge_reopen(count: int, edge: VectorIndex = edge, size: int = size) -> float:
            started = time.perf_counter()
            for _ in range(count):
                edge.release_if_idle(force=True)
                assert edge.count() == size
            return time.perf_counter() - started

        def local_reopen(count: int, local: LocalMode = local, size: int = size) -> float:
            started = time.perf_counter()
            for _ in range(count):
                local.close()
                assert local.open() == size
            return time.perf_counter() - started

        # Local mode scans every point in Python, filtered or not: fewer queries keep it short.
        slow = max(1, queries // 10)
        for what, conversation in (("search", None), ("filtered search", middle)):
            for name, search, count in ((EDGE, edge_search, queries),
                                        (LOCAL, local.search, slow)):  # fmt: skip
                cases.append(Case(
                    name=f"index {what} @ {label}: {name}", unit="query", count=count,
                    prepare=ready(_searches(search, query_vectors, conversation)),
                    note=f"top 10{' of one conversation' if conversation else ''}, folder",
                ))  # fmt: skip
            comparisons.append(Comparison(
                label=f"index {what} @ {label}: {EDGE} vs {LOCAL}",
                ours=f"index {what} @ {label}: {EDGE}",
                reference=f"index {what} @ {label}: {LOCAL}", kind="speedup",
            ))  # fmt: skip
        for name, run in ((EDGE, edge_reopen), (LOCAL, local_reopen)):
            cases.append(Case(name=f"index reopen @ {label}: {name}", unit="open", count=1,
                              prepare=ready(run), note="close, open, count"))  # fmt: skip
        comparisons.append(Comparison(
            label=f"index reopen @ {label}: {EDGE} vs {LOCAL}",
            ours=f"index reopen @ {label}: {EDGE}",
            reference=f"index reopen @ {label}: {LOCAL}", kind="speedup",
        ))  # fmt: skip
    for name, index in ((EDGE, "folder"), (LOCAL, ":memory:")):
        cases.append(Case(
            name=f"index catch-up of {adds:,} adds: {name}", unit="add", count=adds,
            prepare=_catch_up(workdir, index, name), note=f"write, then drain ({index})",
        ))  # fmt: skip
    comparisons.append(Comparison(
        label=f"index catch-up of {adds:,} adds: {EDGE} vs {LOCAL}",
        ours=f"index catch-up of {adds:,} adds: {EDGE}",
        reference=f"index catch-up of {adds:,} adds: {LOCAL}", kind="speedup",
    ))  # fmt: skip
    return cases, comparisons, closers


def _catch_up(workdir: Path, index: str, name: str) -> Callable[[], Run]:
    """A burst of adds through the pipeline (indexer in the background), timed until
    the index has every one: the store's writes and the indexer's drain."""

    def prepare() -> Run:
        slug = "edge" if name == EDGE else "memory"
        db = fresh(workdir / f"catch-up-{slug}.db")
        folder = workdir / f"catch-up-{slug}.db.index"
        shutil.rmtree(folder, ignore_errors=True)
        location = str(folder) if index == "folder" else index
        pipeline = Pipeline.open(str(db), index=location, load_entrypoints=False)
        pipeline.flush_index(timeout=60)  # opened, before the clock starts

        def run(count: int) -> float:
            lines = texts(count)
            try:
                started = time.perf_counter()
                for start in range(0, count, BATCH):
                    pipeline.persist_many(
                        Add(conversation_id=f"c{i // PER_CONVERSATION}", role="user",
                            content=lines[i]) for i in range(start, min(count, start + BATCH))
                    )  # fmt: skip
                pipeline.flush_index(timeout=600)
                return time.perf_counter() - started
            finally:
                pipeline.close()

        return run

    return prepare
