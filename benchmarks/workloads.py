"""The write and read cases: Anchorline, and raw apsw doing the same SQL work.

The raw cases use the same file layout (:data:`anchorline.memory.sqlite.schema.SCHEMA`, its
tables and indexes), the same pragmas (WAL, ``synchronous=NORMAL``, or FULL
beside ``durability="full"``) and the same row: a ~500-byte content, a fresh
UUIDv7 id and a millisecond timestamp per row. They skip everything the
pipeline adds: building and validating the op, JSON-encoding it, the hook
chain, the retry journal and the result.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import apsw

from anchorline.hookspecs import hookimpl
from anchorline.ids import new_message_id, wall_ms
from anchorline.memory.rows import COLUMNS, READ_COLUMNS
from anchorline.memory.sqlite.crud import INSERT as STORE_INSERT
from anchorline.memory.sqlite.schema import LOG_TRIGGERS, SCHEMA, ensure_schema
from anchorline.ops import Add, Reserve, UpdateContent
from anchorline.plugin_manager import create_plugin_manager
from anchorline.results import Added, Message
from anchorline.runner import Pipeline

from .rounds import Case, Comparison, Prepare, Run, ready

CONVERSATION = "bench"
CONTENT = (
    "The flight to Lisbon leaves at 09:40 from gate B12; boarding closes twenty minutes"
    " before. I have added the booking reference to your notes, checked that the hotel"
    " transfer is confirmed for the evening, and set a reminder two hours ahead. If the"
    " departure moves, the airline will message the number on file and I will update the"
    " itinerary, the calendar entry and the transfer time. Your seat is 14C, an aisle seat"
    " near the front, and one checked bag of 23 kg is included in the fare you booked."
)
CONTENT_JSON = json.dumps(CONTENT)
#: 50 deltas that add up to :data:`CONTENT`, as a model would stream it.
_CUTS = [len(CONTENT) * k // 50 for k in range(51)]
DELTAS = [CONTENT[a:b] for a, b in itertools.pairwise(_CUTS)]

# The raw twin numbers its rows itself (seq), as an application would: the store's
# triggers (the conversation's row, the change feed) are what persist adds.
RAW_INSERT = f"INSERT INTO messages ({COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
RAW_SEQ = itertools.count(1)
RAW_UPDATE = "UPDATE messages SET content = ?, status = ?, updated_at = ? WHERE id = ?"
RAW_LAST_50 = f"""SELECT {COLUMNS}, seq FROM (
    SELECT * FROM messages WHERE conversation_id = ?
    ORDER BY seq DESC LIMIT ?) ORDER BY seq"""


def fresh(path: Path) -> Path:
    """``path`` with no database (nor its WAL) left from an earlier round."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def raw_connection(
    path: Path, *, create: bool = True, synchronous: str = "NORMAL", logged: bool = False
) -> apsw.Connection:
    """A raw apsw connection on a file with the store's layout; ``logged`` adds the
    store's log triggers (the conversation's row, the change feed)."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if create:
        conn.execute(SCHEMA)
        if logged:
            conn.execute(LOG_TRIGGERS)
    return conn


def open_pipeline(path: Path, durability: str = "normal") -> Pipeline:
    # The default plugins only: installed third-party plugins would time themselves.
    return Pipeline.open(str(path), load_entrypoints=False, durability=durability)


Store = TypeVar("Store", Pipeline, apsw.Connection)


def _timed(open_store: Callable[[], Store], body: Callable[[Store, int], None]) -> Prepare:
    """A case that opens its store (untimed), runs ``body`` (timed), then closes it."""

    def prepare() -> Run:
        store = open_store()

        def run(count: int) -> float:
            started = time.perf_counter()
            body(store, count)
            took = time.perf_counter() - started
            store.close()
            return took

        return run

    return prepare


def timed_pipeline(
    path: Path, body: Callable[[Pipeline, int], None], durability: str = "normal"
) -> Prepare:
    return _timed(lambda: open_pipeline(fresh(path), durability), body)


def _timed_raw(
    path: Path,
    body: Callable[[apsw.Connection, int], None],
    synchronous: str = "NORMAL",
    *,
    logged: bool = False,
) -> Prepare:
    return _timed(lambda: raw_connection(fresh(path), synchronous=synchronous, logged=logged), body)


# --- the contract's own floor ------------------------------------------------------


def _answer(op: Add) -> Added:
    now = wall_ms()
    message = Message(
        id=new_message_id(), conversation_id=op.conversation_id, role=op.role,
        content=op.content, metadata=op.metadata, status="complete", created_at=now,
        updated_at=now,
    )  # fmt: skip
    return Added(message=message)


class _Answer:
    """Answers ``persist`` (and ``persist_batch``) with the results a terminal returns,
    without storing anything."""

    @hookimpl
    def persist(self, op: Add, context: object) -> Added:
        return _answer(op)

    @hookimpl
    def persist_batch(self, ops: list[Add], context: object) -> list[Added]:
        return [_answer(op) for op in ops]


def contract_floor(per_unit: int) -> Prepare:
    """What any implementation of the contract pays per op before touching storage:
    building the validated op and its result, and one call of the ``persist`` hook per
    op (one unit), or of ``persist_batch`` per batch (``per_unit`` ops)."""

    def prepare() -> Run:
        pm = create_plugin_manager()
        pm.register(_Answer())
        persist, persist_batch = pm.hook.persist, pm.hook.persist_batch

        def run(count: int) -> float:
            started = time.perf_counter()
            for _ in range(count):
                if per_unit == 1:
                    persist(
                        op=Add(conversation_id=CONVERSATION, role="assistant", content=CONTENT),
                        context=None,
                    )
                    continue
                ops = [
                    Add(conversation_id=CONVERSATION, role="assistant", content=CONTENT)
                    for _ in range(per_unit)
                ]
                persist_batch(ops=ops, context=None)
            return time.perf_counter() - started

        return run

    return prepare


# --- 1. one Add per transaction ----------------------------------------------


def persist_adds(pipeline: Pipeline, count: int) -> None:
    persist = pipeline.persist
    for _ in range(count):
        persist(Add(conversation_id=CONVERSATION, role="assistant", content=CONTENT))


def _raw_insert(conn: apsw.Connection, count: int) -> None:
    execute = conn.execute
    for _ in range(count):
        now = wall_ms()
        execute("BEGIN IMMEDIATE")
        execute(
            RAW_INSERT,
            (new_message_id(), CONVERSATION, "assistant", CONTENT_JSON, "{}", "complete", None,
             now, now, next(RAW_SEQ)),
        )  # fmt: skip
        execute("COMMIT")


def _raw_logged_insert(conn: apsw.Connection, count: int) -> None:
    execute = conn.execute
    for _ in range(count):
        now = wall_ms()
        execute("BEGIN IMMEDIATE")
        execute(
            STORE_INSERT,
            (new_message_id(), CONVERSATION, "assistant", CONTENT_JSON, "{}", "complete", None,
             now, now),
        ).fetchall()  # fmt: skip
        execute("COMMIT")


# --- 2. reserve, then the final content ---------------------------------------


def reserve_final(pipeline: Pipeline, count: int) -> None:
    persist = pipeline.persist
    for _ in range(count):
        reserved = persist(Reserve(conversation_id=CONVERSATION, role="assistant"))
        persist(UpdateContent(message_id=reserved.message.id, content=CONTENT))


def _raw_reserve(conn: apsw.Connection) -> str:
    message_id, now = new_message_id(), wall_ms()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        RAW_INSERT,
        (message_id, CONVERSATION, "assistant", "[]", "{}", "reserved", None, now, now,
         next(RAW_SEQ)),
    )  # fmt: skip
    conn.execute("COMMIT")
    return message_id


def _raw_update(conn: apsw.Connection, message_id: str, content_json: str, status: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(RAW_UPDATE, (content_json, status, wall_ms(), message_id))
    conn.execute("COMMIT")


def _raw_insert_update(conn: apsw.Connection, count: int) -> None:
    for _ in range(count):
        _raw_update(conn, _raw_reserve(conn), CONTENT_JSON, "complete")


# --- 3. a batch in one transaction ---------------------------------------------


def persist_batches(size: int) -> Callable[[Pipeline, int], None]:
    def body(pipeline: Pipeline, count: int) -> None:
        for _ in range(count):
            pipeline.persist_many(
                [
                    Add(conversation_id=CONVERSATION, role="assistant", content=CONTENT)
                    for _ in range(size)
                ]
            )

    return body


def _raw_executemany(size: int) -> Callable[[apsw.Connection, int], None]:
    def body(conn: apsw.Connection, count: int) -> None:
        for _ in range(count):
            now = wall_ms()
            rows = [
                (new_message_id(), CONVERSATION, "assistant", CONTENT_JSON, "{}", "complete",
                 None, now, now, next(RAW_SEQ))
                for _ in range(size)
            ]  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_INSERT, rows)
            conn.execute("COMMIT")

    return body


def _raw_logged_executemany(size: int) -> Callable[[apsw.Connection, int], None]:
    def body(conn: apsw.Connection, count: int) -> None:
        for _ in range(count):
            now = wall_ms()
            rows = [
                (new_message_id(), CONVERSATION, "assistant", CONTENT_JSON, "{}", "complete",
                 None, now, now)
                for _ in range(size)
            ]  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(STORE_INSERT, rows).fetchall()
            conn.execute("COMMIT")

    return body


# --- 4. a streamed turn ------------------------------------------------------------


def _stream_turn(pipeline: Pipeline, count: int) -> None:
    for _ in range(count):
        with pipeline.stream(CONVERSATION, flush_interval=3600) as s:
            for i, delta in enumerate(DELTAS):
                s.append(delta)
                if i == len(DELTAS) // 2:
                    s.flush()


def _raw_turn(conn: apsw.Connection, count: int) -> None:
    for _ in range(count):
        message_id = _raw_reserve(conn)
        text = ""
        for i, delta in enumerate(DELTAS):
            text += delta
            if i == len(DELTAS) // 2:
                partial = json.dumps(text)
                _raw_update(conn, message_id, partial, "reserved")
        final = json.dumps(text)
        _raw_update(conn, message_id, final, "complete")


def write_cases(workdir: Path, *, ops: int, pairs: int, batches: int, batch_size: int,
                turns: int) -> tuple[list[Case], list[Comparison]]:  # fmt: skip
    """Cases 1 to 4, each with its raw twin, and the targets they are held to; then
    case 1 again with a sync per commit (``durability="full"``), on fewer ops."""
    batch = f"persist_many({batch_size:,})"
    synced = max(1, ops // 10)
    raw_batch = f"raw executemany({batch_size:,})"
    cases = [
        Case(name="persist(Add)", unit="op", count=ops,
             prepare=timed_pipeline(workdir / "add.db", persist_adds)),
        Case(name="raw insert", unit="op", count=ops,
             prepare=_timed_raw(workdir / "raw-add.db", _raw_insert)),
        Case(name="raw insert, logged", unit="op", count=ops,
             prepare=_timed_raw(workdir / "raw-add-logged.db", _raw_logged_insert,
                                logged=True),
             note="the store's INSERT and log triggers: the same durable work as persist"),
        Case(name="reserve + final", unit="pair", count=pairs,
             prepare=timed_pipeline(workdir / "pair.db", reserve_final)),
        Case(name="raw insert + update", unit="pair", count=pairs,
             prepare=_timed_raw(workdir / "raw-pair.db", _raw_insert_update)),
        Case(name=batch, unit="batch", count=batches,
             prepare=timed_pipeline(workdir / "many.db", persist_batches(batch_size))),
        Case(name=raw_batch, unit="batch", count=batches,
             prepare=_timed_raw(workdir / "raw-many.db", _raw_executemany(batch_size))),
        Case(name=f"{raw_batch}, logged", unit="batch", count=batches,
             prepare=_timed_raw(workdir / "raw-many-logged.db",
                                _raw_logged_executemany(batch_size), logged=True)),
        Case(name="contract floor", unit="op", count=ops, prepare=contract_floor(1),
             note="Add() + one persist hook call + its Message/Added; no storage"),
        Case(name=f"contract floor x{batch_size:,}", unit="batch", count=batches,
             prepare=contract_floor(batch_size),
             note="Add() per op + one persist_batch call + a Message/Added per op"),
        Case(name="stream turn", unit="turn", count=turns,
             prepare=timed_pipeline(workdir / "turn.db", _stream_turn),
             note="reserve, 50 deltas, 1 partial flush, final"),
        Case(name="raw turn", unit="turn", count=turns,
             prepare=_timed_raw(workdir / "raw-turn.db", _raw_turn)),
        Case(name="persist(Add) full", unit="op", count=synced,
             prepare=timed_pipeline(workdir / "add-full.db", persist_adds, "full"),
             note='durability="full": synchronous=FULL, a WAL sync per commit'),
        Case(name="raw insert FULL", unit="op", count=synced,
             prepare=_timed_raw(workdir / "raw-add-full.db", _raw_insert, "FULL")),
    ]  # fmt: skip
    comparisons = [
        Comparison(label="persist(Add) vs raw insert", ours="persist(Add)",
                   reference="raw insert", kind="throughput", low=0.85),
        Comparison(label="reserve + final vs raw pair", ours="reserve + final",
                   reference="raw insert + update", kind="throughput", low=0.80),
        Comparison(label=f"{batch} vs {raw_batch}", ours=batch, reference=raw_batch,
                   kind="throughput", low=0.70),
        Comparison(label="persist(Add) vs raw insert, logged", ours="persist(Add)",
                   reference="raw insert, logged", kind="throughput"),
        Comparison(label=f"{batch} vs {raw_batch}, logged", ours=batch,
                   reference=f"{raw_batch}, logged", kind="throughput"),
        Comparison(label="ceiling for persist(Add)", ours="contract floor",
                   reference="raw insert", kind="ceiling"),
        Comparison(label=f"ceiling for {batch}", ours=f"contract floor x{batch_size:,}",
                   reference=raw_batch, kind="ceiling"),
        Comparison(label="stream turn vs raw turn", ours="stream turn", reference="raw turn",
                   kind="throughput"),
        Comparison(label="persist(Add) full vs raw insert FULL", ours="persist(Add) full",
                   reference="raw insert FULL", kind="throughput"),
        Comparison(label="durability full vs normal, persist(Add)", ours="persist(Add) full",
                   reference="persist(Add)", kind="throughput"),
    ]  # fmt: skip
    return cases, comparisons


# --- 5. reading the last 50 -------------------------------------------------------

PER_CONVERSATION = 200

_FILL = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
INSERT INTO messages ({COLUMNS}, seq)
SELECT printf('%08x-0000-7000-8000-%012x', i / 65536, i), 'c' || (i / {PER_CONVERSATION}),
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, ?2, '{{}}', 'complete', NULL,
       1700000000000 + i, 1700000000000 + i, i % {PER_CONVERSATION} + 1
FROM n"""


def filled(path: Path, size: int) -> Path:
    """A database holding ``size`` messages, :data:`PER_CONVERSATION` per conversation."""
    conn = apsw.Connection(str(fresh(path)))
    conn.execute("PRAGMA journal_mode = OFF")  # a bulk load: nothing to recover
    conn.execute("PRAGMA synchronous = OFF")
    ensure_schema(conn, str(path))
    conn.execute("BEGIN")
    conn.execute(_FILL, (size, CONTENT_JSON))
    conn.execute("COMMIT")
    conn.close()
    return path


_NAMES = [name.strip() for name in READ_COLUMNS.split(",")]


def decode_rows(rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The read twin's answer: each row as a dict, its content and metadata decoded with
    the standard ``json`` module."""
    found = []
    for row in rows:
        message = dict(zip(_NAMES, row, strict=True))
        message["content"] = json.loads(row[3])
        message["metadata"] = json.loads(row[4])
        found.append(message)
    return found


def size_label(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:g}M"
    return f"{size / 1000:g}k" if size >= 1000 else str(size)


def read_cases(workdir: Path, sizes: tuple[int, ...], reads: int,
               progress: Callable[[str], None] | None = None,
               ) -> tuple[list[Case], list[Comparison], list[Callable[[], None]]]:  # fmt: skip
    """Case 5: the last 50 messages of a conversation, at each database size."""
    cases, comparisons, closers = [], [], []
    for size in sizes:
        if progress:
            progress(f"filling a database with {size:,} messages")
        path = filled(workdir / f"read-{size}.db", size)
        conversation = f"c{size // PER_CONVERSATION // 2}"  # one in the middle of the file
        pipeline = open_pipeline(path)
        raw = raw_connection(path, create=False)
        closers += [pipeline.close, raw.close]
        label = size_label(size)

        def ours(count: int, pipeline: Pipeline = pipeline, conversation: str = conversation
                 ) -> float:  # fmt: skip
            started = time.perf_counter()
            for _ in range(count):
                pipeline.messages(conversation, limit=50)
            return time.perf_counter() - started

        def theirs(count: int, raw: apsw.Connection = raw, conversation: str = conversation
                   ) -> float:  # fmt: skip
            started = time.perf_counter()
            for _ in range(count):
                raw.execute(RAW_LAST_50, (conversation, 50)).fetchall()
            return time.perf_counter() - started

        def decoded(count: int, raw: apsw.Connection = raw, conversation: str = conversation
                    ) -> float:  # fmt: skip
            started = time.perf_counter()
            for _ in range(count):
                decode_rows(raw.execute(RAW_LAST_50, (conversation, 50)))
            return time.perf_counter() - started

        cases += [
            Case(name=f"last 50 @ {label}", unit="read", count=reads,
                 prepare=ready(ours)),
            Case(name=f"raw last 50 @ {label}", unit="read", count=reads,
                 prepare=ready(theirs)),
            Case(name=f"raw decoded last 50 @ {label}", unit="read", count=reads,
                 prepare=ready(decoded), note="each row a dict, its JSON decoded by json"),
        ]  # fmt: skip
        comparisons += [
            Comparison(label=f"last 50 @ {label} vs raw", ours=f"last 50 @ {label}",
                       reference=f"raw last 50 @ {label}", kind="throughput"),
            Comparison(label=f"last 50 @ {label} vs raw decoded", ours=f"last 50 @ {label}",
                       reference=f"raw decoded last 50 @ {label}", kind="throughput", low=0.60),
        ]  # fmt: skip
    smallest = size_label(sizes[0])
    for size in sizes[1:]:
        label = size_label(size)
        comparisons.append(
            Comparison(label=f"last 50 @ {label} / @ {smallest}", ours=f"last 50 @ {label}",
                       reference=f"last 50 @ {smallest}", kind="flat", low=0.8, high=1.2)
        )  # fmt: skip
    return cases, comparisons, closers


# --- 6. paging one long conversation by seq (opt-in: anchorline bench --paging) -----------

_FILL_ONE = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1)
INSERT INTO messages ({COLUMNS}, seq)
SELECT printf('%08x-0000-7000-8000-%012x', i / 65536, i), 'long',
       CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END, ?2, '{{}}', 'complete', NULL,
       1700000000000 + i, 1700000000000 + i, i + 1
FROM n"""


def filled_one(path: Path, size: int) -> Path:
    """A database holding one conversation, ``long``, of ``size`` messages."""
    conn = apsw.Connection(str(fresh(path)))
    conn.execute("PRAGMA journal_mode = OFF")  # a bulk load: nothing to recover
    conn.execute("PRAGMA synchronous = OFF")
    ensure_schema(conn, str(path))
    conn.execute("BEGIN")
    conn.execute(_FILL_ONE, (size, CONTENT_JSON))  # the triggers keep the log, as in use
    conn.execute("COMMIT")
    conn.close()
    return path


def page_cases(workdir: Path, sizes: tuple[int, ...], reads: int,
               progress: Callable[[str], None] | None = None,
               ) -> tuple[list[Case], list[Comparison], list[Callable[[], None]]]:  # fmt: skip
    """Case 6: a page of 50 from the middle of one conversation of each size
    (``messages(after_seq=..., limit=50)``), which the (conversation, seq) index
    keeps flat however long the conversation grows."""
    cases, comparisons, closers = [], [], []
    for size in sizes:
        if progress:
            progress(f"filling one conversation with {size:,} messages")
        pipeline = open_pipeline(filled_one(workdir / f"page-{size}.db", size))
        closers.append(pipeline.close)

        def ours(count: int, pipeline: Pipeline = pipeline, middle: int = size // 2) -> float:
            started = time.perf_counter()
            for _ in range(count):
                pipeline.messages("long", after_seq=middle, limit=50)
            return time.perf_counter() - started

        cases.append(
            Case(name=f"page 50 @ {size_label(size)}", unit="read", count=reads,
                 prepare=ready(ours))
        )  # fmt: skip
    smallest = size_label(sizes[0]) if sizes else ""
    for size in sizes[1:]:
        label = size_label(size)
        comparisons.append(
            Comparison(label=f"page 50 @ {label} / @ {smallest}", ours=f"page 50 @ {label}",
                       reference=f"page 50 @ {smallest}", kind="flat", low=0.8, high=1.2)
        )  # fmt: skip
    return cases, comparisons, closers
