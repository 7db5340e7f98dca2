"""Faults of a shared PostgreSQL database, through ``Pipeline.open(url)`` in real processes:
contention, index workers sharing one outbox, connections killed by the server, and a
server restart. Every acknowledged op is in the database at the end, exactly once.

The processes are ``tests/support/pg_agents.py``; every wait on them is bounded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from anchorline import Add, Pipeline
from anchorline.memory.index.embedders import HashingEmbedder
from anchorline.memory.index.vector_index import VectorIndex

from ..support.pg_agents import CLAIM_BATCH
from .conftest import finishes, knob

if TYPE_CHECKING:
    from tests.support.postgres_server import PgServer, Server

ROOT = Path(__file__).resolve().parents[2]
#: The longest any process may take to finish once told to.
PROCESS_TIMEOUT = 120.0


# --- processes --------------------------------------------------------------------------


class Agents:
    """The processes a test started: all killed at the end, whatever happened."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``python -m tests.support.pg_agents ARGS``, once it has printed ``ready``."""
        env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.pg_agents", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.started.append(proc)
        assert proc.stdout is not None
        line = finishes(proc.stdout.readline, f"{args[0]} agent start", 60.0)
        if line.strip() != "ready":
            proc.kill()
            pytest.fail(f"a {args[0]} agent did not start: {proc.communicate()[1][-3000:]}")
        return proc

    def finish(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """The last line ``proc`` printed, and its stderr, once it exited 0."""
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, err[-3000:]
        lines = out.strip().splitlines()
        return (lines[-1] if lines else ""), err

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def agents() -> Iterator[Agents]:
    started = Agents()
    try:
        yield started
    finally:
        started.kill_all()


def wait_until(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition()`` until it is true; fail the test after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"{what}: not after {timeout:g}s")
        time.sleep(0.02)


def acked(path: Path) -> int:
    """How many ops the agent writing ``path`` has had acknowledged so far."""
    return len(path.read_text().splitlines()) if path.exists() else 0


def more_acks(path: Path, count: int, what: str) -> None:
    """Wait until the agent writing ``path`` has ``count`` more ops acknowledged."""
    target = acked(path) + count
    wait_until(lambda: acked(path) >= target, what)


# --- the database against what was acknowledged -------------------------------------------


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def text_of(content: str | list[dict[str, Any]]) -> str:
    """The text of stored or acknowledged content: a string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)


def check_acknowledged(
    url: str,
    acks: list[Path],
    unsure: AbstractSet[str] = frozenset(),
    attempted: AbstractSet[str] = frozenset(),
) -> dict[str, int]:
    """The database holds every acknowledged op's effect, once, and nothing else.

    Each file is one process's acknowledgements in the order they came. A message's
    expected state is what its last acknowledged content op left, with the metadata of
    every acknowledged update merged in; a deleted message is gone. The ids in
    ``unsure`` were touched by an op that raised: they may hold more than was
    acknowledged (a streamed answer finalised as interrupted), or have gone (its empty
    placeholder deleted). ``attempted`` are client ids of ops that raised, whose
    messages may or may not be there. Returns the figures.
    """
    expected: dict[str, dict[str, Any]] = {}
    deleted: set[str] = set()
    by_key: dict[tuple[str, str], set[str]] = {}
    first_adds: dict[tuple[str, str], int] = {}
    count = 0
    for path in acks:
        for line in path.read_text().splitlines():
            ack = json.loads(line)
            count += 1
            op, mid = ack["op"], ack["id"]
            state = expected.setdefault(mid, {"metadata": {}})
            if op in ("add", "reserve"):
                key = (ack["conversation"], ack["key"])
                by_key.setdefault(key, set()).add(mid)
                first_adds[key] = first_adds.get(key, 0) + (not ack.get("dedup", False))
                if op == "add":
                    state.update(content=ack["content"], status="complete")
                elif "content" not in state:
                    state.update(content=[], status="reserved")
            elif op in ("partial", "final"):
                state.update(
                    content=ack["content"], status="complete" if op == "final" else "reserved"
                )
            elif op == "meta":
                state["metadata"].update(ack["metadata"])
            elif op == "delete":
                deleted.add(mid)

    rows = sql(
        url,
        "SELECT id, conversation_id, client_message_id, content, metadata, status"
        " FROM anchorline.messages",
    )
    stored = {row[0]: row for row in rows}
    assert len(stored) == len(rows), "an id stored twice"
    keys = [(row[1], row[2]) for row in rows if row[2] is not None]
    assert len(keys) == len(set(keys)), "a client_message_id stored twice"
    for key, ids in by_key.items():
        assert len(ids) == 1, f"client id {key} acknowledged as several messages: {ids}"
        assert first_adds[key] == 1, f"client id {key} created {first_adds[key]} times"
        [mid] = ids
        if mid in stored:
            assert stored[mid][1:3] == key, f"message {mid} stored under {stored[mid][1:3]}"
    lost = []
    for mid, state in expected.items():
        if mid in deleted:
            assert mid not in stored, f"acknowledged delete of {mid} undone"
            continue
        row = stored.get(mid)
        if mid in unsure:
            if row is not None and "content" in state:
                stored_text, acked_text = text_of(json.loads(row[3])), text_of(state["content"])
                assert stored_text.startswith(acked_text), f"message {mid} lost streamed text"
            continue
        if row is None:
            lost.append(mid)
            continue
        content, status = json.loads(row[3]), row[5]
        assert (content, status) == (state["content"], state["status"]), (
            f"message {mid}: acknowledged {state['status']} content {state['content']!r},"
            f" stored {status} {content!r}"
        )
        metadata = json.loads(row[4])
        assert metadata == state["metadata"], (
            f"message {mid}: acknowledged metadata {state['metadata']}, stored {metadata}"
        )
    assert not lost, f"{len(lost)} acknowledged message(s) lost: {lost[:5]}"
    known = set(expected) | unsure
    strays = [row for row in rows if row[0] not in known and row[2] not in attempted]
    assert not strays, f"{len(strays)} message(s) nobody acknowledged: {strays[:3]}"
    return {"acknowledged": count, "messages": len(rows)}


# --- 1. contention ------------------------------------------------------------------------


def test_processes_contending_for_one_database_lose_and_duplicate_nothing(
    agents: Agents, postgres_url: str, tmp_path: Path, figures: list[str]
) -> None:
    procs, ops = knob("PG_CONTENTION_PROCESSES", 4), knob("PG_CONTENTION_OPS", 2000)
    Pipeline.open(postgres_url, load_entrypoints=False).close()  # the schema, made once
    go = tmp_path / "go"
    acks = [tmp_path / f"p{n}.acks" for n in range(procs)]
    writers = [
        agents.start("mixed", f"p{n}", postgres_url, str(acks[n]), str(go), str(ops))
        for n in range(procs)
    ]
    go.touch()  # all at once, so they really contend
    outcomes = [agents.finish(writer) for writer in writers]
    errors = [err for out, err in outcomes if out != "0"]
    assert not errors, f"errors reached the callers: {errors[0][-3000:]}"

    found = check_acknowledged(postgres_url, acks)
    assert found["acknowledged"] == procs * ops
    figures.append(
        f"postgres contention: {procs} processes x {ops} ops (add/reserve/partial/final/"
        "metadata/delete, repeated client ids, one client id added by every process) on one"
        f" database; {found['acknowledged']} acknowledged, {found['messages']} messages,"
        " 0 lost, 0 duplicated, 0 errors"
    )


def test_replayed_commits_return_the_seq_that_was_stored(
    agents: Agents, postgres_url: str, tmp_path: Path, figures: list[str]
) -> None:
    """Six processes add under a 1 ms lock timeout, each write a usual transaction: many
    COMMITs time out on the feed's head row and replay. Every result's seq is the one
    stored, and no two results share a seq in a conversation."""
    procs, ops = 6, knob("PG_REPLAY_OPS", 150)
    Pipeline.open(postgres_url, load_entrypoints=False).close()
    go = tmp_path / "go"
    acks = [tmp_path / f"r{n}.acks" for n in range(procs)]
    writers = [
        agents.start(
            "replay",
            f"r{n}",
            postgres_url,
            str(acks[n]),
            str(go),
            str(ops),
            "shared" if n % 2 == 0 else f"own-{n}",
        )
        for n in range(procs)
    ]
    go.touch()
    for writer in writers:
        assert agents.finish(writer)[0] == "0"
    told = [json.loads(line) for path in acks for line in path.read_text().splitlines()]
    stored = dict(sql(postgres_url, "SELECT id, seq FROM anchorline.messages"))
    wrong = [ack for ack in told if stored.get(ack["id"]) != ack["seq"]]
    seqs = [(ack["conversation"], ack["seq"]) for ack in told]
    assert (len(told), len(stored)) == (procs * ops, procs * ops)
    assert not wrong, f"{len(wrong)} results told a seq other than the stored one: {wrong[:3]}"
    assert len(set(seqs)) == len(seqs), "two results told the same seq"
    figures.append(
        f"postgres replay: {procs} processes x {ops} adds (3 on one conversation, 3 on their"
        " own), 1 ms lock timeout, a wrapper on persist; {0} acknowledged, {1} stored,"
        " 0 results whose seq differs from the stored one".format(len(told), len(stored))
    )


# --- 2. index workers -----------------------------------------------------------------


def test_index_workers_in_three_processes_partition_one_outbox(
    agents: Agents, postgres_url: str, tmp_path: Path, figures: list[str]
) -> None:
    """Three index workers drain one outbox: each message lands in exactly one index.

    There is no Qdrant server on this machine, and an embedded Qdrant folder belongs
    to one process, so each worker indexes into a folder of its own (how it keeps its
    folder a shard of the work is in ``pg_agents.index_worker``). The union of the
    three folders is then every complete message, and their sizes add up to the
    number of messages: the ``FOR UPDATE SKIP LOCKED`` claims partitioned the work.
    """
    workers_n, messages = 3, knob("PG_INDEX_MESSAGES", 5000)
    with Pipeline.open(
        postgres_url, index=str(tmp_path / "agent.index"), index_drain=False, load_entrypoints=False
    ) as writer:
        for start in range(0, messages, 250):
            writer.persist_many(
                [
                    Add(
                        conversation_id=f"c{i % 20}",
                        role="user",
                        content=f"message {i} about shards",
                    )
                    for i in range(start, min(start + 250, messages))
                ]
            )
        assert writer.index_status().pending == messages

        go = tmp_path / "go"
        folders = [tmp_path / f"worker{n}.index" for n in range(workers_n)]
        workers = [agents.start("index", postgres_url, str(f), str(go)) for f in folders]
        go.touch()
        wait_until(lambda: writer.index_status().pending == 0, "the outbox drained", 90.0)
        status = writer.index_status()
    assert status.failing == 0 and status.last_error is None, status
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        report = json.loads(agents.finish(worker)[0])
        assert report == {"stopped": True, "pending": 0, "last_error": None}

    embedder = HashingEmbedder()
    shards = []
    for folder in folders:
        index = VectorIndex(str(folder), model=embedder.name, dimension=embedder.dimension)
        try:
            shards.append((index.count(), index.message_ids()))
        finally:
            index.close()
    complete = {mid for (mid,) in sql(postgres_url, "SELECT id FROM anchorline.messages")}
    union = set().union(*(ids for _, ids in shards))
    assert union == complete and len(complete) == messages
    assert sum(count for count, _ in shards) == messages, "a message indexed by two workers"
    assert sum(len(ids) for _, ids in shards) == messages
    assert all(count for count, _ in shards), "a worker got no share of the work"
    figures.append(
        f"postgres index workers: {workers_n} processes drained one outbox of {messages}"
        f" messages (SKIP LOCKED claims of {CLAIM_BATCH}) into"
        f" {' + '.join(str(c) for c, _ in shards)} points;"
        " 0 indexed twice, 0 missing"
    )


# --- 3. killed connections ----------------------------------------------------------------


def terminate_sessions(admin_url: str, database: str) -> list[str]:
    """``pg_terminate_backend`` every session of the store on ``database`` but our own;
    the state each was in (``idle``, ``active``, ``idle in transaction``)."""
    rows = sql(
        admin_url,
        "SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
        " AND application_name = 'anchorline' AND pid <> pg_backend_pid()",
        (database,),
    )
    return [str(state) for state, _ in rows]


def summary(agents: Agents, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """What a ``stream`` agent reported once stopped: turns, ops, slow ops, errors."""
    result: dict[str, Any] = json.loads(agents.finish(proc)[0])
    return result


def test_connections_terminated_mid_run_lose_nothing_and_raise_nothing(
    agents: Agents, postgres_url: str, postgres_server: Server, tmp_path: Path, figures: list[str]
) -> None:
    """A side connection terminates every session of the store, round after round, while
    an agent streams turns: the retries replay each transaction on a new connection.

    The agent runs a patient retry policy (30 s deadline, 1000 attempts). Each round
    kills every pooled connection at once, and each dead one costs the next write an
    attempt (up to ``pool_max``, 4): two rounds meeting one write can use up the default
    policy's 8 attempts in under a second, as happened about once in ten runs.
    """
    rounds = knob("PG_TERMINATE_ROUNDS", 12)
    rng = random.Random(knob("PG_TERMINATE_SEED", 5))
    Pipeline.open(postgres_url, load_entrypoints=False).close()
    acks, stop = tmp_path / "agent.acks", tmp_path / "stop"
    writer = agents.start("stream", "a", postgres_url, str(acks), str(stop), "patient")
    more_acks(acks, 20, "the agent writing")
    states: list[str] = []
    for _ in range(rounds):
        time.sleep(rng.uniform(0.03, 0.25))
        states += terminate_sessions(postgres_server.conninfo, dbname(postgres_url))
    terminated, busy = len(states), sum(state != "idle" for state in states)
    more_acks(acks, 20, "the agent writing after the last kill")
    stop.touch()
    result = summary(agents, writer)
    assert not result["errors"], f"errors reached the caller: {result['errors'][:3]}"
    assert terminated >= rounds // 2, f"only {terminated} sessions terminated"
    found = check_acknowledged(postgres_url, [acks])
    figures.append(
        f"postgres terminated connections: {rounds} rounds of pg_terminate_backend killed"
        f" {terminated} sessions of a streaming agent ({busy} in a statement or transaction;"
        f" RetryPolicy deadline 30 s); {result['ops']} ops in {result['turns']} turns,"
        f" {found['acknowledged']} acknowledged, {result['slow']} waited > 0.5 s;"
        " 0 lost, 0 duplicated, 0 errors"
    )


# --- 4. a server restart ------------------------------------------------------------------


@pytest.fixture
def own_server(own_postgres_server: Server) -> PgServer:
    assert own_postgres_server.process is not None
    return own_postgres_server.process


def test_a_server_restarting_mid_run_loses_nothing_and_raises_at_most_one_line(
    agents: Agents,
    own_postgres_server: Server,
    own_server: PgServer,
    tmp_path: Path,
    figures: list[str],
) -> None:
    """Two agents write through restarts of the server: one with a patient retry policy
    (30 s deadline), which waits out each outage of about a second, and one with a
    brief one (0.5 s), whose writes meanwhile raise ``StorageUnavailable``."""
    restarts = knob("PG_RESTARTS", 2)
    with own_postgres_server.fresh_database() as url:
        Pipeline.open(url, load_entrypoints=False).close()
        stop = tmp_path / "stop"
        acks = {policy: tmp_path / f"{policy}.acks" for policy in ("patient", "brief")}
        writers = {
            policy: agents.start("stream", policy, url, str(path), str(stop), policy)
            for policy, path in acks.items()
        }
        for _ in range(restarts):
            more_acks(acks["patient"], 50, "the patient agent writing")
            try:
                own_server.stop_postmaster()  # fast shutdown: every session gets 57P01
                time.sleep(1.0)
            finally:
                own_server.start_postmaster()
        for path in acks.values():  # both work again, the brief one too
            more_acks(path, 50, f"{path.stem} agent writing after the restarts")
        stop.touch()
        results = {policy: summary(agents, writer) for policy, writer in writers.items()}

        assert not results["patient"]["errors"], (
            f"the patient policy did not wait it out: {results['patient']['errors'][:3]}"
        )
        assert results["brief"]["errors"], "no write during the outages reached the caller"
        unsure: set[str] = set()
        attempted: set[str] = set()
        for error in results["brief"]["errors"]:
            # One line naming the server, never psycopg's own error.
            assert (error["module"], error["type"]) == ("anchorline.errors", "StorageUnavailable")
            assert "\n" not in error["message"], error
            assert f"PostgreSQL database {dbname(url)} on {own_server.base}" in error["message"]
            unsure.update(error["ids"])
            attempted.update(error["keys"])
        found = check_acknowledged(url, list(acks.values()), unsure, attempted)
    patient, brief = results["patient"], results["brief"]
    figures.append(
        f"postgres restart: {restarts} server restarts (fast shutdown, 1 s down) under two"
        f" streaming agents; patient policy (30 s): {patient['ops']} ops, {patient['slow']}"
        f" waited out a restart, 0 errors; brief policy (0.5 s): {brief['ops']} ops,"
        f" {len(brief['errors'])} StorageUnavailable (one line naming the server);"
        f" {found['acknowledged']} acknowledged, 0 lost, 0 duplicated"
    )
