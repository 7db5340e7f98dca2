"""persist latency with the index on against off, and reindex throughput, in one run.

Run: python -m anchorline.bench.index_latency [N]
Each case writes N ``Add`` ops of about 30 words to a fresh database and
reports the median (p50) and p99 latency of ``persist``. "index on" is the
default configuration (embedded Qdrant next to the database, background
worker), so the worker's embedding and upserts compete with the writer for
the two cores and the GIL, as they would in an agent process. Then the index
is emptied and ``reindex`` rebuilt, timed as messages per second.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from anchorline import Add, Pipeline
from anchorline.plugins.indexer import Indexer

WORDS = (
    "agent tool call stream token message answer user model search memory index vector store"
    " retry busy lock write commit durable plugin chain terminal reserve placeholder final"
).split()


def texts(n: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choices(WORDS, k=30)) for _ in range(n)]


def settle() -> None:
    """Let the kernel write back the last case's files before the next one is timed."""
    os.sync()
    time.sleep(0.5)


def latencies(path: Path, corpus: list[str], index: str | None) -> list[float]:
    settle()
    samples = []
    with Pipeline.open(str(path), index=index, load_entrypoints=False) as pipeline:
        for text in corpus:
            started = time.perf_counter()
            pipeline.persist(Add(conversation_id="bench", role="user", content=text))
            samples.append(time.perf_counter() - started)
        if index:
            pipeline.flush_index(timeout=600)
    return samples


def reindex_rate(path: Path) -> tuple[int, float]:
    with Pipeline.open(
        str(path), index="local", index_sync=True, load_entrypoints=False
    ) as pipeline:
        indexer = pipeline.plugin_manager.get_plugin("indexer")
        assert isinstance(indexer, Indexer) and indexer.index is not None
        indexer.index.recreate()
        started = time.perf_counter()
        count = indexer.reindex()
        return count, count / (time.perf_counter() - started)


def quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q * 100) - 1]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    corpus = texts(n)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        off: list[float] = []
        on: list[float] = []
        ratios = []
        for r in range(rounds):  # paired rounds: drift on the machine hits both cases
            this_off = latencies(Path(tmp) / f"off{r}.db", corpus, None)
            this_on = latencies(Path(tmp) / f"on{r}.db", corpus, "local")
            ratios.append(statistics.median(this_on) / statistics.median(this_off))
            off += this_off
            on += this_on
        p50_off, p50_on = statistics.median(off), statistics.median(on)
        print(
            f"persist p50, index off: {p50_off * 1e6:8.1f} us   p99 {quantile(off, 0.99) * 1e6:8.1f} us"
        )
        print(
            f"persist p50, index on:  {p50_on * 1e6:8.1f} us   p99 {quantile(on, 0.99) * 1e6:8.1f} us"
        )
        print(
            f"ratio on/off (p50): {statistics.median(ratios):.2f}x, median of {rounds} paired rounds"
            f" (each: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
        count, rate = reindex_rate(Path(tmp) / "on0.db")
        print(f"reindex: {count} messages at {rate:,.0f} messages/s (embedded Qdrant on disk)")


if __name__ == "__main__":
    main()
