"""The write cases on a PostgreSQL server: Anchorline against raw psycopg twins.

Everything runs in scratch databases the bench creates on the server it is
given (``anchorline_bench_<token>_<case>``) and drops at the end, whatever ends
the run: the database named in the URL is only used to create and drop them.
In each scratch database the pipeline writes to the store's own schema
(``anchorline``) and its raw twin to the same tables, made by the store's own
DDL, under the schema ``bench_raw``. Both sides' tables are emptied
(``TRUNCATE``) before every round of their case.

The twins do the same statements and commit as often as the pipeline, on the
same server, with the same row (a ~500-byte content, a fresh UUIDv7 id,
millisecond timestamps). They skip what the pipeline adds: building and
validating the op, encoding its JSON, the hook chain, the retry journal, the
pool and the result objects. See docs/performance.md.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection as Pipe
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from anchorline.errors import ConfigurationError
from anchorline.ids import new_message_id, wall_ms
from anchorline.memory.postgres.connection import describe, location_of
from anchorline.memory.postgres.crud import COLUMNS
from anchorline.memory.postgres.schema import DDL, SCHEMA, ensure_schema
from anchorline.runner import Pipeline

from .rounds import Case, Comparison, Prepare, Run
from .workloads import (
    CONTENT_JSON,
    CONVERSATION,
    contract_floor,
    persist_adds,
    persist_batches,
    reserve_final,
)

RAW_SCHEMA = "bench_raw"
PREFIX = "anchorline_bench_"
Side = Literal["pipeline", "raw", "logged"]

_VALUES = ", ".join(["%s"] * 10)
# The raw twin numbers its rows itself (seq, unique across the writer processes and
# increasing, as an application would); the conversation's row is what persist adds.
RAW_INSERT = f"INSERT INTO {RAW_SCHEMA}.messages ({COLUMNS}, seq) VALUES ({_VALUES})"


_SEQ: dict[int, itertools.count[int]] = {}


def _raw_seq() -> int:
    # Counted per process from the microsecond it first wrote, times 1024, plus the pid.
    pid = os.getpid()
    counter = _SEQ.get(pid)
    if counter is None:
        counter = _SEQ[pid] = itertools.count(time.time_ns() // 1000)
    return next(counter) * 1024 + pid % 1024


# The logged twins call the store's own functions (schema.py) under RAW_SCHEMA: the
# message, its conversation's row and its change feed row, committed by the one
# statement, which is the durable work persist does.
LOGGED_INSERT = (
    f"SELECT {RAW_SCHEMA}.insert_message(%s, %s, NULL, %s, %s, '{{}}', %s, NULL, %s, true)"
)
LOGGED_UPDATE = f"SELECT * FROM {RAW_SCHEMA}.update_content(%s, %s, true, %s, NULL, true)"
RAW_UPDATE = (
    f"UPDATE {RAW_SCHEMA}.messages SET content = %s, status = %s, updated_at = %s WHERE id = %s"
)
#: Server settings the report names: they decide what a commit waits for.
SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")


def raw_schema_ddl() -> str:
    """The store's own DDL (tables, indexes, trigger function) under :data:`RAW_SCHEMA`."""
    return re.sub(rf"\b{SCHEMA}\b", RAW_SCHEMA, DDL)


def is_postgres_url(location: str) -> bool:
    return location.partition("://")[0].lower() in ("postgresql", "postgres")


def with_database(url: str, name: str) -> str:
    """``url`` (a ``postgresql://`` URL) naming the database ``name`` instead."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "dbname"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{quote(name)}", query, parts.fragment))


class Scratch:
    """Scratch databases on the server at ``url``; :meth:`close` drops every one.

    Creating them needs the ``CREATEDB`` privilege (or a superuser).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = location_of(url, conninfo_to_dict(url))
        self.token = secrets.token_hex(4)
        self.names: list[str] = []

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def create(self, label: str) -> str:
        """A new database with both sides' empty tables in it; its URL."""
        name = f"{PREFIX}{self.token}_{label}"
        with self._admin() as admin:
            try:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
                )
            except psycopg.errors.InsufficientPrivilege:
                user = admin.info.user
                raise ConfigurationError(
                    f"--db: the bench makes scratch databases on {self.location}, and user"
                    f" {user!r} may not create one: grant it CREATEDB, or use another user"
                ) from None
        self.names.append(name)
        url = with_database(self.url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            ensure_schema(conn, describe({}, conn))
            conn.execute(raw_schema_ddl())
            for schema in (SCHEMA, RAW_SCHEMA):
                # Each round starts on empty tables: a vacuum of the last round's rows,
                # started whenever the daemon wakes, would only add noise to some case.
                for table in ("messages", "index_outbox"):
                    conn.execute(f"ALTER TABLE {schema}.{table} SET (autovacuum_enabled = off)")
        return url

    def close(self) -> None:
        """Drop every scratch database, closing whatever sessions are still in them."""
        if not self.names:
            return
        with self._admin() as admin:
            while self.names:
                name = self.names[-1]
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                self.names.pop()

    def facts(self) -> dict[str, str]:
        """The server, its version and the settings that decide what a commit waits for."""
        with self._admin() as admin:
            version = admin.execute("SHOW server_version").fetchone()
            settings = [
                f"{name}={(admin.execute(f'SHOW {name}').fetchone() or ('?',))[0]}"
                for name in SETTINGS
            ]
            host = admin.info.host
        via = "a unix socket" if host.startswith("/") else f"TCP to {host}"
        return {
            f"PostgreSQL {version[0] if version else '?'}": f"{', '.join(settings)} (via {via})"
        }


def empty(url: str, schema: str) -> None:
    """Empty one side's tables, for a new round on fresh ones."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {schema}.messages, {schema}.index_outbox RESTART IDENTITY")


def open_pipeline(url: str) -> Pipeline:
    # The default plugins only; a first read makes the pool open its connection, untimed.
    pipeline = Pipeline.open(url, load_entrypoints=False)
    try:
        pipeline.messages("warm-up", limit=1)
    except BaseException:
        pipeline.close()
        raise
    return pipeline


def raw_connection(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


# --- the raw twins -----------------------------------------------------------------
#
# Each twin commits as often as the pipeline does, in the cheapest way psycopg offers
# on an autocommit connection: a lone statement is its own transaction (one round
# trip), and ``executemany`` sends its rows in one pipeline that is one (implicit)
# transaction.


def _row(message_id: str, content_json: str, status: str, now: int) -> tuple[Any, ...]:
    return (
        message_id, CONVERSATION, "assistant", content_json, "{}", status, None, now, now,
        _raw_seq(),
    )  # fmt: skip


def raw_insert(conn: psycopg.Connection[Any], count: int) -> None:
    """``count`` lone ``INSERT`` statements, each its own transaction."""
    execute = conn.cursor().execute
    for _ in range(count):
        execute(RAW_INSERT, _row(new_message_id(), CONTENT_JSON, "complete", wall_ms()))


def raw_insert_update(conn: psycopg.Connection[Any], count: int) -> None:
    """``count`` placeholders, each its own transaction, then each one's final content in
    another."""
    execute = conn.cursor().execute
    for _ in range(count):
        message_id = new_message_id()
        execute(RAW_INSERT, _row(message_id, "[]", "reserved", wall_ms()))
        execute(RAW_UPDATE, (CONTENT_JSON, "complete", wall_ms(), message_id))


def logged_insert(conn: psycopg.Connection[Any], count: int) -> None:
    """``count`` messages written with their log rows, each one statement and its own
    transaction."""
    execute = conn.cursor().execute
    for _ in range(count):
        execute(
            LOGGED_INSERT,
            (new_message_id(), CONVERSATION, "assistant", CONTENT_JSON, "complete", wall_ms()),
        )


def logged_insert_update(conn: psycopg.Connection[Any], count: int) -> None:
    """The pair, logged: each placeholder and each final content one statement and its
    own transaction."""
    execute = conn.cursor().execute
    for _ in range(count):
        message_id = new_message_id()
        execute(LOGGED_INSERT, (message_id, CONVERSATION, "assistant", "[]", "reserved", wall_ms()))
        execute(LOGGED_UPDATE, (message_id, CONTENT_JSON, wall_ms()))


def raw_executemany(size: int) -> Callable[[psycopg.Connection[Any], int], None]:
    """``count`` transactions of ``size`` rows, each one ``executemany``: its rows go in
    one pipeline, one round trip and one transaction."""

    def body(conn: psycopg.Connection[Any], count: int) -> None:
        for _ in range(count):
            now = wall_ms()
            rows = [_row(new_message_id(), CONTENT_JSON, "complete", now) for _ in range(size)]
            conn.cursor().executemany(RAW_INSERT, rows)

    return body


# --- timing ------------------------------------------------------------------------------


def _timed_pipeline(url: str, body: Callable[[Pipeline, int], None]) -> Prepare:
    def prepare() -> Run:
        empty(url, SCHEMA)
        pipeline = open_pipeline(url)

        def run(count: int) -> float:
            try:
                started = time.perf_counter()
                body(pipeline, count)
                return time.perf_counter() - started
            finally:
                pipeline.close()

        return run

    return prepare


def _timed_raw(url: str, body: Callable[[psycopg.Connection[Any], int], None]) -> Prepare:
    def prepare() -> Run:
        empty(url, RAW_SCHEMA)
        conn = raw_connection(url)

        def run(count: int) -> float:
            try:
                started = time.perf_counter()
                body(conn, count)
                return time.perf_counter() - started
            finally:
                conn.close()

        return run

    return prepare


# --- concurrent writers -----------------------------------------------------------------


def _writer(side: Side, url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """What one writer process does per op, and how it lets go of its store."""
    if side == "pipeline":
        pipeline = open_pipeline(url)
        return lambda count: persist_adds(pipeline, count), pipeline.close
    conn = raw_connection(url)
    write = raw_insert if side == "raw" else logged_insert
    return lambda count: write(conn, count), conn.close


def serve(pipe: Pipe) -> None:
    """A writer process: on ``("open", side, url, count)`` it opens its store and says
    ``ready``; on ``go`` it writes ``count`` ops and says ``done``, then closes the store
    and says ``closed``; ``stop``, or its parent's end, ends it."""
    try:
        while True:
            command = pipe.recv()
            if command[0] != "open":
                return
            _, side, url, count = command
            try:
                write, close = _writer(side, url)
                try:
                    pipe.send("ready")
                    if pipe.recv() != "go":
                        return
                    write(count)
                    pipe.send("done")
                finally:
                    close()
            except Exception as e:
                pipe.send(f"failed: {type(e).__name__}: {e}")
                continue
            pipe.send("closed")
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


class Writers:
    """``n`` writer processes, started once and used by every round; :meth:`close` ends
    them. Each round, all of them write at once, and the figure is their aggregate."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._processes: list[Any] = []
        self._pipes: list[Pipe] = []

    def start(self) -> None:
        # Not fork: the parent holds psycopg pools and their threads.
        context = multiprocessing.get_context("spawn")
        # The writers inherit an ignored SIGINT: Ctrl-C stops the parent, which ends them.
        ignoring = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
        try:
            for _ in range(self.n):
                ours, theirs = context.Pipe()
                process = context.Process(target=serve, args=(theirs,), daemon=True)
                process.start()
                theirs.close()
                self._processes.append(process)
                self._pipes.append(ours)
        finally:
            if ignoring:
                signal.signal(signal.SIGINT, previous)

    def _expect(self, word: str) -> None:
        for pipe in self._pipes:
            answer = pipe.recv()
            if answer != word:
                raise RuntimeError(f"a writer process {answer}")

    def prepare(self, side: Side, url: str) -> Prepare:
        schema = SCHEMA if side == "pipeline" else RAW_SCHEMA

        def prepare() -> Run:
            empty(url, schema)

            def run(count: int) -> float:
                for pipe in self._pipes:
                    pipe.send(("open", side, url, count // self.n))
                self._expect("ready")
                started = time.perf_counter()
                for pipe in self._pipes:
                    pipe.send("go")
                self._expect("done")
                took = time.perf_counter() - started
                self._expect("closed")
                return took

            return run

        return prepare

    def close(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for pipe in self._pipes:
            pipe.close()
        self._processes.clear()
        self._pipes.clear()


@contextlib.contextmanager
def writers(n: int) -> Iterator[Writers]:
    pool = Writers(n)
    try:
        pool.start()
        yield pool
    finally:
        pool.close()


# --- the cases -------------------------------------------------------------------------------


def postgres_cases(
    scratch: Scratch,
    pool: Writers,
    *,
    ops: int,
    pairs: int,
    batches: int,
    batch_size: int,
    writer_ops: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Case], list[Comparison]]:
    """Each write case on its own scratch database, with its twin beside it, and the
    targets they are held to; and ``pool.n`` writer processes at once."""
    urls = {}
    for label in ("add", "pair", "many", "writers"):
        if progress:
            progress(f"creating the scratch database for {label}")
        urls[label] = scratch.create(label)
    batch = f"persist_many({batch_size:,})"
    raw_batch = f"raw executemany({batch_size:,})"
    n = pool.n
    ours_n, raw_n = f"{n} writers persist(Add)", f"{n} writers raw insert"
    logged_note = "with its conversation row and feed row: the store's own SQL function"
    cases = [
        Case(name="persist(Add)", unit="op", count=ops,
             prepare=_timed_pipeline(urls["add"], persist_adds)),
        Case(name="raw insert", unit="op", count=ops,
             prepare=_timed_raw(urls["add"], raw_insert),
             note="a lone INSERT, its own transaction: one round trip"),
        Case(name="raw insert, logged", unit="op", count=ops,
             prepare=_timed_raw(urls["add"], logged_insert), note=logged_note),
        Case(name="reserve + final", unit="pair", count=pairs,
             prepare=_timed_pipeline(urls["pair"], reserve_final)),
        Case(name="raw insert + update", unit="pair", count=pairs,
             prepare=_timed_raw(urls["pair"], raw_insert_update)),
        Case(name="raw insert + update, logged", unit="pair", count=pairs,
             prepare=_timed_raw(urls["pair"], logged_insert_update)),
        Case(name=batch, unit="batch", count=batches,
             prepare=_timed_pipeline(urls["many"], persist_batches(batch_size))),
        Case(name=raw_batch, unit="batch", count=batches,
             prepare=_timed_raw(urls["many"], raw_executemany(batch_size)),
             note="one executemany: one pipeline, one transaction"),
        Case(name="contract floor", unit="op", count=ops, prepare=contract_floor(1),
             note="Add() + one persist hook call + its Message/Added; no storage"),
        Case(name=f"contract floor x{batch_size:,}", unit="batch", count=batches,
             prepare=contract_floor(batch_size)),
        Case(name=ours_n, unit="op", count=writer_ops * n,
             prepare=pool.prepare("pipeline", urls["writers"]),
             note=f"{n} processes, each its own loop; the time of all ops, over their count"),
        Case(name=raw_n, unit="op", count=writer_ops * n,
             prepare=pool.prepare("raw", urls["writers"])),
        Case(name=f"{raw_n}, logged", unit="op", count=writer_ops * n,
             prepare=pool.prepare("logged", urls["writers"])),
    ]  # fmt: skip
    comparisons = [
        Comparison(label="persist(Add) vs raw insert", ours="persist(Add)",
                   reference="raw insert", kind="throughput", low=0.80),
        Comparison(label="reserve + final vs raw pair", ours="reserve + final",
                   reference="raw insert + update", kind="throughput", low=0.80),
        Comparison(label=f"{batch} vs {raw_batch}", ours=batch, reference=raw_batch,
                   kind="throughput", low=0.70),
        Comparison(label=f"{ours_n} vs {raw_n}", ours=ours_n, reference=raw_n,
                   kind="throughput", low=0.80),
        Comparison(label="persist(Add) vs raw insert, logged", ours="persist(Add)",
                   reference="raw insert, logged", kind="throughput"),
        Comparison(label="reserve + final vs raw pair, logged", ours="reserve + final",
                   reference="raw insert + update, logged", kind="throughput"),
        Comparison(label=f"{ours_n} vs {raw_n}, logged", ours=ours_n,
                   reference=f"{raw_n}, logged", kind="throughput"),
        Comparison(label="ceiling for persist(Add)", ours="contract floor",
                   reference="raw insert", kind="ceiling"),
        Comparison(label=f"ceiling for {batch}", ours=f"contract floor x{batch_size:,}",
                   reference=raw_batch, kind="ceiling"),
    ]  # fmt: skip
    return cases, comparisons
