"""persist(Add) against a raw apsw single-row insert, measured in the same run.

Run: python benchmarks/bench_persist.py [N]
Prints ops/s for each case and its time per op as a ratio to raw apsw (WAL,
synchronous=NORMAL, one 3-column INSERT per transaction). "same SQL" issues the
statements the terminal runs for an Add (the message row with its indexes, and
the conversation upsert) straight through apsw, which separates the cost of
the schema from the cost of the pipeline. Each round runs every case once on a
fresh file; the ratio is taken within a round, and the median over rounds is
reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from pipeline import Add, Pipeline


def raw_apsw(path: Path, n: int) -> float:
    os.sync()  # start each case with the kernel's write-back done
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

    conn = connect(str(path))
    os.sync()
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT, (f"id-{i}", "c", "user", '"hello"', "{}", "complete", None, i, i))
        conn.execute(_TOUCH_CONVERSATION, ("c", i))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def anchorline_add(path: Path, n: int, **options: object) -> float:
    with Pipeline.open(str(path), load_entrypoints=False, **options) as pipeline:  # type: ignore[arg-type]
        os.sync()
        start = time.perf_counter()
        for _ in range(n):
            pipeline.persist(Add(conversation_id="c", role="user", content="hello"))
        elapsed = time.perf_counter() - start
    return n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    cases: dict[str, Callable[[Path, int], float]] = {
        "raw apsw insert": raw_apsw,
        "raw apsw, same SQL": raw_apsw_same_sql,
        "persist(Add)": anchorline_add,
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # the cases alternate, so drift on the machine hits all of them
        with tempfile.TemporaryDirectory() as tmp:
            this_round = {
                name: case(Path(tmp) / f"{i}.db", n) for i, (name, case) in enumerate(cases.items())
            }
        for name, rate in this_round.items():
            rates[name].append(rate)
            ratios[name].append(this_round["raw apsw insert"] / rate)
    for name in cases:
        print(
            f"{name:<20} {statistics.median(rates[name]):>9,.0f} ops/s"
            f"  {statistics.median(ratios[name]):.2f}x the time of raw apsw (median of {rounds} paired rounds)"
        )


if __name__ == "__main__":
    main()
