"""``anchorline copy`` and ``anchorline index-worker``, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anchorline import Add, ConfigurationError, Pipeline, Reserve


def anchorline(*args: str) -> list[str]:
    return [sys.executable, "-m", "anchorline.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}


def test_copy_copies_every_message_and_a_second_run_writes_nothing(tmp_path: Path) -> None:
    source, target = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    with Pipeline.open(source, load_entrypoints=False) as pipeline:
        for i in range(5):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"m{i}"))
    first = subprocess.run(anchorline("copy", source, target), capture_output=True, text=True,
                           env=env(), timeout=120, check=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "copied 5 message(s)" in first.stdout and "5 written, 0 already there" in first.stdout
    second = subprocess.run(anchorline("copy", source, target), capture_output=True, text=True,
                            env=env(), timeout=120, check=False)  # fmt: skip
    assert "0 written, 5 already there" in second.stdout
    with Pipeline.open(target, load_entrypoints=False) as pipeline:
        assert [m.content for m in pipeline.messages("c")] == [f"m{i}" for i in range(5)]


def test_copy_from_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        anchorline("copy", str(tmp_path / "missing.db"), str(tmp_path / "b.db")),
        capture_output=True, text=True, env=env(), timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("anchorline: error: no database at ")
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_index_worker_drains_what_other_processes_write_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    db, folder = str(tmp_path / "chat.db"), str(tmp_path / "index")
    Pipeline.open(db, index=folder, index_drain=False, load_entrypoints=False).close()
    worker = subprocess.Popen(
        anchorline("--db", db, "--index", folder, "index-worker"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        assert "draining" in worker.stdout.readline()
        # An agent process that writes and leaves the indexing to the worker.
        with Pipeline.open(db, index=folder, index_drain=False, load_entrypoints=False) as agent:
            for i in range(20):
                agent.persist(Add(conversation_id="c", role="user", content=f"fact number {i}"))
            deadline = time.monotonic() + 60
            while agent.index_status().pending and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.index_status().pending == 0
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "stopped; 0 item(s) left" in out
    with Pipeline.open(db, index=folder, load_entrypoints=False) as pipeline:
        hits = pipeline.search("fact number 7", conversation_id="c", limit=20)
        assert len(hits) == 20 and hits[0].message.content == "fact number 7"


def test_index_drain_false_and_index_sync_true_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="choose one"):
        Pipeline.open(str(tmp_path / "x.db"), index=":memory:", index_sync=True,
                      index_drain=False, load_entrypoints=False)  # fmt: skip


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(anchorline(*args), input=stdin, capture_output=True, text=True,
                          env=env(), timeout=120, check=False)  # fmt: skip


def test_every_command_works_on_a_postgres_url(postgres_url: str, tmp_path: Path) -> None:
    lines = "\n".join(
        json.dumps({"kind": "add", "conversation_id": "c", "role": "user", "content": text})
        for text in ("hello there", "[bold]as written[/bold]")
    )
    ingested = run("--db", postgres_url, "ingest", "-", stdin=lines + "\n")
    assert ingested.returncode == 0, ingested.stderr
    shown = run("--db", postgres_url, "show", "c")
    assert shown.returncode == 0, shown.stderr
    assert "hello there" in shown.stdout and "[bold]as written[/bold]" in shown.stdout
    for command in (("plugins",), ("sweep",)):
        done = run("--db", postgres_url, *command)
        assert done.returncode == 0, (command, done.stderr)
    folder = str(tmp_path / "index")
    assert run("--db", postgres_url, "--index", folder, "reindex").returncode == 0
    found = run("--db", postgres_url, "--index", folder, "search", "hello")
    assert found.returncode == 0 and "hello there" in found.stdout, found.stderr
    assert run("--db", postgres_url, "--index", folder, "doctor").returncode == 0


def test_a_local_index_next_to_a_database_server_is_refused_in_one_line(postgres_url: str) -> None:
    refused = run("--db", postgres_url, "--index", "local", "search", "hello")
    assert refused.returncode == 1
    assert "a database server has none; give a Qdrant server URL" in refused.stderr
    assert refused.stderr.count("\n") == 1
    with pytest.raises(ConfigurationError, match="'local' is a folder next to a database file"):
        Pipeline.open(postgres_url, index="local", load_entrypoints=False)


def test_a_sqlite_store_moves_up_to_postgres_and_back_unchanged(
    postgres_url: str, tmp_path: Path
) -> None:
    source, back = str(tmp_path / "chat.db"), str(tmp_path / "back.db")
    with Pipeline.open(source, load_entrypoints=False) as pipeline:
        for i in range(30):
            pipeline.persist(Add(conversation_id=f"c{i % 3}", role="user", content=f"m{i}",
                                 metadata={"order": [3, 1, 2], "big": 2**64 + i},
                                 client_message_id=f"k{i}"))  # fmt: skip
        with pipeline.stream("c0") as s:
            s.append("streamed ")
            s.append("reply")
        pipeline.persist(Reserve(conversation_id="c1", role="assistant"))
    up = run("copy", source, postgres_url)
    assert up.returncode == 0 and "32 written" in up.stdout, up.stderr
    assert "already there" in run("copy", source, postgres_url).stdout  # idempotent
    down = run("copy", postgres_url, back)
    assert down.returncode == 0 and "32 written" in down.stdout, down.stderr
    with (
        Pipeline.open(source, load_entrypoints=False) as a,
        Pipeline.open(back, load_entrypoints=False) as b,
    ):
        for conversation in ("c0", "c1", "c2"):
            assert a.messages(conversation) == b.messages(conversation)
