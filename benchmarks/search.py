"""Case 6: search latency as the embedded index grows.

Each size gets its own database and embedded (local-mode) Qdrant collection,
filled through the pipeline and the indexer like any other writes. Local mode
holds every vector in memory and searches them by brute force whether or not
the collection is backed by a folder, so the collections are kept in memory
(``index=":memory:"``): filling 50k points into a folder takes about a minute,
at one journal commit per point, which would be most of the run.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from anchorline.ops import Add
from anchorline.runner import Pipeline

from .rounds import Case, Comparison, ready
from .workloads import fresh, size_label

_LINES = (
    "flight hotel booking gate boarding seat bag transfer reminder calendar invoice refund",
    "meeting agenda notes deadline report budget travel visa passport train taxi dinner",
    "restaurant weather forecast delay cancel confirm schedule itinerary airport lounge",
)
WORDS = " ".join(_LINES).split(" ")
QUERIES = ("when does my flight leave", "hotel transfer time", "refund for the cancelled train")


def _corpus(size: int) -> list[str]:
    rng = random.Random(size)
    return [" ".join(rng.choices(WORDS, k=30)) for _ in range(size)]


def search_cases(workdir: Path, sizes: tuple[int, ...], queries: int,
                 progress: Callable[[str], None] | None = None,
                 ) -> tuple[list[Case], list[Comparison], list[Callable[[], None]]]:  # fmt: skip
    cases: list[Case] = []
    closers: list[Callable[[], None]] = []
    for size in sizes:
        if progress:
            progress(f"indexing {size:,} messages")
        pipeline = Pipeline.open(
            str(fresh(workdir / f"search-{size}.db")), index=":memory:", load_entrypoints=False
        )
        closers.append(pipeline.close)
        texts = _corpus(size)
        for start in range(0, size, 1000):
            pipeline.persist_many(
                Add(conversation_id=f"c{i // 200}", role="user", content=text)
                for i, text in enumerate(texts[start : start + 1000], start)
            )
        with warnings.catch_warnings():
            # qdrant-client advises a server above 20k points; the bench measures why.
            warnings.filterwarnings("ignore", message="Local mode is not recommended")
            pipeline.flush_index(timeout=600)

        def run(count: int, pipeline: Pipeline = pipeline) -> float:
            started = time.perf_counter()
            for i in range(count):
                pipeline.search(QUERIES[i % len(QUERIES)], limit=10)
            return time.perf_counter() - started

        cases.append(
            Case(name=f"search @ {size_label(size)}", unit="query", count=queries,
                 prepare=ready(run), note="top 10, embedded Qdrant")
        )  # fmt: skip
    smallest = size_label(sizes[0])
    comparisons = [
        Comparison(label=f"search @ {size_label(s)} / @ {smallest}",
                   ours=f"search @ {size_label(s)}", reference=f"search @ {smallest}",
                   kind="flat")
        for s in sizes[1:]
    ]  # fmt: skip
    return cases, comparisons, closers
