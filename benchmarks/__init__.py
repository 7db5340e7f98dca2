"""``anchorline bench``: the pipeline against raw apsw and the peers, in one run.

Every case runs once per round and the rounds alternate, so machine noise
hits all cases alike; each comparison is a ratio taken within a round. See
docs/performance.md for the method and the latest figures.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import attrs

from anchorline.errors import StorageUnavailable

from .peers import peer_cases
from .report import Report
from .rounds import Case, Comparison, compare, run_rounds
from .search import search_cases
from .workloads import page_cases, read_cases, write_cases


@attrs.frozen(kw_only=True)
class Config:
    """How much work each case does per round."""

    rounds: int = 11
    ops: int = 3000
    pairs: int = 1000
    batches: int = 3
    batch_size: int = 1000
    turns: int = 300
    reads: int = 1000
    read_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    #: One conversation of each size, paged by seq; opt-in (``anchorline bench --paging``).
    page_sizes: tuple[int, ...] = ()
    queries: int = 5
    search_sizes: tuple[int, ...] = (1_000, 10_000, 50_000)
    peer_items: int = 300
    peer_batches: int = 10
    peer_batch_size: int = 100
    peers: bool = True
    quick: bool = False
    #: A ``postgresql://`` URL: measure the write cases on that server instead of SQLite.
    db: str | None = None
    writers: int = 4
    writer_ops: int = 1000
    #: Only the embedded index's cases (``anchorline bench --index``): Qdrant Edge
    #: against qdrant-client's local mode, at these sizes.
    index: bool = False
    index_sizes: tuple[int, ...] = (10_000, 50_000)
    index_queries: int = 50
    index_adds: int = 10_000


#: The sizes ``--paging`` measures: one conversation of 10k messages, and of 1M.
PAGE_SIZES = (10_000, 1_000_000)

#: A smoke run of a few seconds: it proves every case works, its figures mean little.
QUICK = Config(
    rounds=2, ops=50, pairs=25, batches=1, batch_size=100, turns=10, reads=50,
    read_sizes=(1_000, 5_000), queries=3, search_sizes=(100, 500), peer_items=20,
    peer_batches=2, peer_batch_size=10, writer_ops=10, quick=True,
    index_sizes=(1_000,), index_queries=10, index_adds=500,
)  # fmt: skip


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a full disk: the raw cases' own, or the pipeline's
    ``StorageUnavailable`` caused by one."""
    cause = getattr(error, "last_cause", None) if isinstance(error, StorageUnavailable) else error
    return isinstance(cause, apsw.FullError)


def run_bench(
    config: Config = Config(),
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every case in ``config``, in one process, in alternating rounds.

    With ``config.db``, the write cases on that PostgreSQL server (see
    :mod:`anchorline.bench.postgres`) instead.
    """
    if config.db is not None:
        return run_postgres_bench(config, progress)
    if config.index:
        return run_index_bench(config, workdir, progress)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anchorline-")))
        cases: list[Case] = []
        comparisons: list[Comparison] = []
        facts: dict[str, str] = {}
        skipped: list[str] = []
        more_cases, more_comparisons = write_cases(
            workdir, ops=config.ops, pairs=config.pairs, batches=config.batches,
            batch_size=config.batch_size, turns=config.turns,
        )  # fmt: skip
        cases += more_cases
        comparisons += more_comparisons
        for build, sizes, count in (
            (read_cases, config.read_sizes, config.reads),
            (page_cases, config.page_sizes, config.reads),
            (search_cases, config.search_sizes, config.queries),
        ):
            more_cases, more_comparisons, closers = build(workdir, sizes, count, progress)
            for close in closers:
                stack.callback(close)
            cases += more_cases
            comparisons += more_comparisons
        if config.peers:
            more_cases, more_comparisons = peer_cases(
                workdir, items=config.peer_items, batches=config.peer_batches,
                batch_size=config.peer_batch_size, facts=facts, skipped=skipped,
            )  # fmt: skip
            cases += more_cases
            comparisons += more_comparisons
        else:
            skipped.append("peers: left out with --no-peers")
        # A quick run skips the sync between cases: it proves the cases work, no more.
        timed = run_rounds(cases, config.rounds, progress, sync=not config.quick)
    return Report(
        rounds=config.rounds,
        quick=config.quick,
        timed=timed,
        compared=compare(timed, comparisons),
        skipped=skipped,
        facts=facts,
        seconds=time.perf_counter() - started,
    )


def run_index_bench(
    config: Config, workdir: Path | None = None, progress: Callable[[str], None] | None = None
) -> Report:
    """The embedded index's cases only (see :mod:`anchorline.bench.index`)."""
    from .index import index_cases

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anchorline-")))
        cases, comparisons, closers = index_cases(
            workdir, config.index_sizes, config.index_queries, config.index_adds, progress
        )
        for close in closers:
            stack.callback(close)
        timed = run_rounds(cases, config.rounds, progress, sync=not config.quick)
    return Report(
        rounds=config.rounds,
        quick=config.quick,
        timed=timed,
        compared=compare(timed, comparisons),
        skipped=[],
        facts={},
        seconds=time.perf_counter() - started,
        store="the embedded index (hashing embedder, dimension 384)",
    )


def run_postgres_bench(config: Config, progress: Callable[[str], None] | None = None) -> Report:
    """The write cases on the PostgreSQL server at ``config.db``, each against its raw
    psycopg twin, one and ``config.writers`` writers at a time. Every scratch database is
    dropped at the end, however the run ends."""
    from .postgres import Scratch, postgres_cases, writers

    assert config.db is not None
    started = time.perf_counter()
    with Scratch(config.db) as scratch, writers(config.writers) as pool:
        facts = scratch.facts()
        cases, comparisons = postgres_cases(
            scratch, pool, ops=config.ops, pairs=config.pairs, batches=config.batches,
            batch_size=config.batch_size, writer_ops=config.writer_ops, progress=progress,
        )  # fmt: skip
        timed = run_rounds(cases, config.rounds, progress, sync=not config.quick)
    return Report(
        rounds=config.rounds,
        quick=config.quick,
        timed=timed,
        compared=compare(timed, comparisons),
        skipped=[],
        facts=facts,
        seconds=time.perf_counter() - started,
        store=f"PostgreSQL at {scratch.location}",
    )


__all__ = ["QUICK", "Config", "Report", "run_bench"]
