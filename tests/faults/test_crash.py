"""An agent loop killed with SIGKILL at random points loses nothing it acknowledged."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apsw

from anchorline import Pipeline
from anchorline.plugins.indexer import Indexer

from .conftest import knob

AGENT = textwrap.dedent(
    """
    import json, sys, time
    from anchorline import Add, Pipeline

    db, acks_path, run = sys.argv[1], sys.argv[2], sys.argv[3]
    with Pipeline.open(db, index="local", load_entrypoints=False) as pipeline, \\
            open(acks_path, "a", buffering=1) as acks:
        def ack(kind, message_id, content):
            acks.write(json.dumps({"kind": kind, "id": message_id, "content": content}) + "\\n")
        print("ready", flush=True)
        for turn in range(10_000):
            conversation = f"run{run}-turn{turn}"
            question = f"question {turn} of run {run} about crash recovery"
            op = Add(conversation_id=conversation, role="user", content=question)
            ack("add", pipeline.persist(op).message.id, question)
            with pipeline.stream(conversation, flush_interval=0.005) as s:
                ack("reserve", s.message_id, [])
                for token in range(40):
                    time.sleep(0.0005)  # the model producing the next token
                    s.append(f"token{token} ")
                    if token % 8 == 7:
                        s.flush()
                        ack("partial", s.message_id, s.content)
            ack("final", s.message_id, s.content)
    """
)


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)  # type: ignore[union-attr]


def check_acknowledged(db: Path, acks: Path, swept: set[str]) -> tuple[int, int]:
    """Every acknowledged op is in the database; returns (acks, stranded placeholders).

    The ids in ``swept`` are empty placeholders a sweep deleted, which is its job.
    """
    conn = apsw.Connection(str(db))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {
            row[0]: (row[1], json.loads(row[2]))
            for row in conn.execute("SELECT id, status, content FROM messages")
        }
        stranded = conn.execute(
            "SELECT count(*) FROM messages WHERE status = 'reserved'"
        ).fetchone()[0]
    finally:
        conn.close()
    lines = acks.read_text().splitlines() if acks.exists() else []
    for line in lines:
        ack = json.loads(line)
        if ack["id"] in swept:
            assert ack["kind"] == "reserve", f"the sweep deleted a message with content: {ack}"
            continue
        assert ack["id"] in stored, f"acknowledged {ack['kind']} lost: {ack['id']}"
        status, content = stored[ack["id"]]
        if ack["kind"] in ("add", "final"):
            assert status == "complete" and content == ack["content"], ack
        elif ack["kind"] == "partial":
            # Content only grows while streaming: what is stored extends what was acknowledged.
            assert text_of(content).startswith(text_of(ack["content"])), ack
    return len(lines), stranded


def test_sigkill_at_random_points_loses_nothing_and_the_sweep_recovers(
    tmp_path: Path, figures: list[str]
) -> None:
    runs = knob("CRASH_RUNS", 20)
    rng = random.Random(knob("CRASH_SEED", 11))
    db, acks = tmp_path / "agent.db", tmp_path / "agent.acks"
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    swept = stranded_total = 0
    deleted: set[str] = set()
    for run in range(runs):
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(db), str(acks), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert agent.returncode == -signal.SIGKILL

        acknowledged, stranded = check_acknowledged(db, acks, deleted)
        stranded_total += stranded
        with Pipeline.open(
            str(db), index="local", index_sync=True, load_entrypoints=False
        ) as pipeline:
            report = pipeline.sweep(older_than=0)
            swept += report.total
            deleted.update(report.deleted)
            assert report.total == stranded and not report.skipped
            pipeline.flush_index(timeout=120)
            indexer = pipeline.plugin_manager.get_plugin("indexer")
            assert isinstance(indexer, Indexer)
            doctor = indexer.doctor()
            assert doctor.clean, doctor
        check_acknowledged(db, acks, deleted)  # the sweep kept everything acknowledged
        conn = apsw.Connection(str(db))
        assert (
            conn.execute("SELECT count(*) FROM messages WHERE status = 'reserved'").fetchone()[0]
            == 0
        )
        conn.close()
    figures.append(
        f"crash: {runs} SIGKILLs of a streaming agent loop at random points; {acknowledged}"
        f" acknowledged ops all present; {stranded_total} stranded placeholders, all swept;"
        f" index matched the indexable messages after every run (doctor clean)"
    )
