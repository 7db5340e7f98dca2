"""persist(Add) against a raw apsw single-row insert, measured in the same run.

Run: python benchmarks/bench_persist.py [N]
Prints ops/s for each case and its time per op as a ratio to raw apsw (WAL,
synchronous=NORMAL, one 3-column INSERT per transaction). "same SQL" issues the
statements the terminal runs for an Add (the message row with its indexes, and
the conversation upsert) straight through apsw, which separates the cost of
the schema from the cost of the pipeline. Medians of 5 rounds.
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


def raw_apsw_same_sql(path: Path, n: int) -> float:
    """The statements the SQLite terminal runs for an Add, issued straight through apsw."""
    from memory.connection import connect
    from memory.crud import _INSERT, _TOUCH_CONVERSATION

    conn = connect(str(path), busy_timeout_ms=2000)
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            _INSERT, (f"id-{i}", "c", "user", '"hello"', "{}", "complete", None, i, i)
        )
        conn.execute(_TOUCH_CONVERSATION, ("c", i))
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
    same = median_rate(raw_apsw_same_sql, n)
    print(f"raw apsw, same SQL   {same:>9,.0f} ops/s  {raw / same:.2f}x")
    ours = median_rate(anchorline_add, n)
    print(f"persist(Add)         {ours:>9,.0f} ops/s  {raw / ours:.2f}x")


if __name__ == "__main__":
    main()
