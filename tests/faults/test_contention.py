"""Several processes write one database at once: every acknowledged op is there exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

from .conftest import knob

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from anchorline import Add, Pipeline, Reserve, RetryPolicy, UpdateContent

    name, db, acks_path, ops = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # A short busy timeout, so contention reaches the retry policy instead of
    # being absorbed inside SQLite.
    policy = RetryPolicy(busy_timeout=0.002, initial_backoff=0.001, max_backoff=0.02,
                         max_attempts=500, deadline=60)
    errors = 0
    with Pipeline.open(db, retry=policy, load_entrypoints=False) as pipeline, \\
            open(acks_path, "w", buffering=1) as acks:
        def ack(**fields):
            acks.write(json.dumps(fields) + "\\n")
        print("ready", flush=True)
        while not os.path.exists(db + ".go"):  # start together, so they really contend
            time.sleep(0.001)
        current = None
        for i in range(ops):
            key = f"{name}-{i}"
            try:
                if i % 4 == 0:
                    r = pipeline.persist(Add(conversation_id=name, role="user",
                                             content=f"question {key}", client_message_id=key))
                    ack(id=r.message.id, key=key, content=f"question {key}")
                elif i % 4 == 1:
                    r = pipeline.persist(Reserve(conversation_id=name, role="assistant",
                                                 client_message_id=key))
                    current = (r.message.id, key)
                    ack(id=r.message.id, key=key, content=[])
                elif i % 4 == 2:
                    pipeline.persist(UpdateContent(message_id=current[0],
                                                   content=f"partial {key}", final=False))
                    ack(id=current[0], key=current[1], content=f"partial {key}")
                else:
                    pipeline.persist(UpdateContent(message_id=current[0], content=f"final {key}"))
                    ack(id=current[0], key=current[1], content=f"final {key}")
            except Exception as e:
                errors += 1
                print(f"{type(e).__name__}: {e}", file=sys.stderr)
    print(errors, flush=True)
    """
)


def test_processes_contending_for_one_file_lose_and_duplicate_nothing(
    tmp_path: Path, figures: list[str]
) -> None:
    procs, ops = knob("CONTENTION_PROCESSES", 4), knob("CONTENTION_OPS", 1000)
    db = tmp_path / "shared.db"
    apsw.Connection(str(db)).close()  # an empty file: the writers race to create the schema
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                f"p{n}",
                str(db),
                str(tmp_path / f"p{n}.acks"),
                str(ops),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(procs)
    ]
    for writer in writers:
        assert writer.stdout is not None
        if writer.stdout.readline().strip() != "ready":
            writer.kill()
            pytest.fail(f"a writer did not start: {writer.communicate()[1][-2000:]}")
    Path(str(db) + ".go").touch()
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert out.strip() == "0", f"errors reached the caller: {err[-2000:]}"

    expected: dict[str, tuple[str, object]] = {}
    acknowledged = 0
    for n in range(procs):
        for line in (tmp_path / f"p{n}.acks").read_text().splitlines():
            ack = json.loads(line)
            expected[ack["id"]] = (ack["key"], ack["content"])
            acknowledged += 1
    assert acknowledged == procs * ops

    conn = apsw.Connection(str(db))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    rows = conn.execute("SELECT id, client_message_id, content FROM messages").fetchall()
    conn.close()
    stored = {mid: (key, json.loads(content)) for mid, key, content in rows}
    assert len(rows) == len(stored)  # no id twice
    assert len({key for _, key, _ in rows}) == len(rows)  # no client_message_id twice
    assert stored == expected  # every acknowledged op, in its last acknowledged state
    figures.append(
        f"contention: {procs} processes x {ops} ops (add/reserve/partial/final), busy_timeout 2 ms;"
        f" {acknowledged} acknowledged, {len(stored)} messages, 0 lost, 0 duplicated, 0 errors"
    )
