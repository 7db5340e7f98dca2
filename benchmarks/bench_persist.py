"""persist(Add) against a raw apsw single-row insert, measured in the same run.

Run: python benchmarks/bench_persist.py [N]
Prints ops/s for each case and the ratio to raw apsw (WAL, synchronous=NORMAL,
one INSERT per transaction). Medians of 5 rounds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from pipeline import Add, Pipeline


def raw_apsw(path: Path, n: int) -> float:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS m (id TEXT, conversation_id TEXT, content TEXT)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO m VALUES (?, ?, ?)", (str(i), "c", '"hello"'))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def anchorline_add(path: Path, n: int, **options: object) -> float:
    with Pipeline.open(str(path), load_entrypoints=False, **options) as pipeline:  # type: ignore[arg-type]
        start = time.perf_counter()
        for _ in range(n):
            pipeline.persist(Add(conversation_id="c", role="user", content="hello"))
        elapsed = time.perf_counter() - start
    return n / elapsed


def median_rate(case: Callable[[Path, int], float], n: int, rounds: int = 5) -> float:
    rates = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(case(Path(tmp) / "bench.db", n))
    return statistics.median(rates)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    raw = median_rate(raw_apsw, n)
    print(f"raw apsw insert      {raw:>9,.0f} ops/s  1.00x")
    ours = median_rate(anchorline_add, n)
    print(f"persist(Add)         {ours:>9,.0f} ops/s  {raw / ours:.2f}x the time of raw apsw")


if __name__ == "__main__":
    main()
