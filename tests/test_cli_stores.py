"""``anchorline copy`` and ``anchorline index-worker``, run as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anchorline import Add, ConfigurationError, Pipeline


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
