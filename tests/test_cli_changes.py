"""``anchorline changes``: the change feed on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from anchorline import Add, Pipeline

from .test_cli import line, run


def _ingest(folder: Path, count: int) -> None:
    ops = "\n".join(
        line("add", conversation_id="c", role="user", content=f"m{i}") for i in range(count)
    )
    assert run(folder, "--index", "none", "ingest", "-", stdin=ops).returncode == 0


def _changes(text: str) -> list[dict[str, object]]:
    return [json.loads(row) for row in text.splitlines()]


def test_changes_prints_the_feed_as_json_lines_and_reads_on(tmp_path: Path) -> None:
    _ingest(tmp_path, 4)
    result = run(tmp_path, "changes", "anchorline.db", "--limit", "3")
    assert result.returncode == 0, result.stderr
    first = _changes(result.stdout)
    assert [(c["kind"], c["seq"]) for c in first] == [("add", 1), ("add", 2), ("add", 3)]
    assert "m0" not in result.stdout  # ids only
    rest = _changes(run(tmp_path, "changes", "--after", str(first[-1]["cursor"])).stdout)
    assert [c["seq"] for c in rest] == [4]


def test_changes_trim_then_an_old_cursor_is_an_error(tmp_path: Path) -> None:
    _ingest(tmp_path, 4)
    cursors = [c["cursor"] for c in _changes(run(tmp_path, "changes").stdout)]
    trimmed = run(tmp_path, "changes", "trim", "anchorline.db", "--before", str(cursors[2]))
    assert trimmed.returncode == 0, trimmed.stderr
    assert trimmed.stdout == f"removed 2 changes below cursor {cursors[2]}\n"
    old = run(tmp_path, "changes", "--after", "0")
    assert old.returncode == 1
    assert old.stderr.startswith("anchorline: error: after: cursor 0 is older than")
    assert old.stderr.count("\n") == 1
    # Without --after, the feed is read from the oldest change it keeps.
    oldest = run(tmp_path, "changes")
    assert oldest.returncode == 0, oldest.stderr
    assert [c["cursor"] for c in _changes(oldest.stdout)] == cursors[2:]
    kept = run(tmp_path, "changes", "--after", str(cursors[1]))
    assert [c["cursor"] for c in _changes(kept.stdout)] == cursors[2:]


def test_changes_trim_needs_before_and_defaults_to_the_db(tmp_path: Path) -> None:
    _ingest(tmp_path, 1)
    missing = run(tmp_path, "changes", "trim", "anchorline.db")
    assert missing.returncode == 2 and "--before CURSOR is required" in missing.stderr
    default = run(tmp_path, "changes", "trim", "--before", "2")  # the database is --db's
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith("removed ")
    ahead = run(tmp_path, "changes", "--after", "99")
    assert ahead.returncode == 1
    assert ahead.stderr.startswith("anchorline: error: after: cursor 99 is past the newest")
    huge = run(tmp_path, "changes", "--after", "9" * 30)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr


def test_changes_follow_prints_writes_as_they_commit(tmp_path: Path) -> None:
    _ingest(tmp_path, 1)
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    follower = subprocess.Popen(
        [sys.executable, "-m", "anchorline.cli", "changes", "anchorline.db", "--follow"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []

    def read() -> None:
        assert follower.stdout is not None
        for row in follower.stdout:
            lines.append(row)
            if len(lines) == 2:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with Pipeline.open(str(tmp_path / "anchorline.db"), load_entrypoints=False) as pipeline:
            added = pipeline.persist(Add(conversation_id="later", role="user", content="x"))
        reader.join(timeout=60)
        assert not reader.is_alive(), "the follower printed nothing for the new write"
    finally:
        follower.kill()
        follower.wait(timeout=30)
    assert [json.loads(row)["seq"] for row in lines] == [1, 1]
    assert json.loads(lines[1])["message_id"] == added.message.id


def test_an_expired_cursor_on_postgres_is_one_line_and_the_pool_keeps_its_connection(
    tmp_path: Path, postgres_url: str
) -> None:
    db = ("--db", postgres_url, "--index", "none")
    ops = "\n".join(
        line("add", conversation_id="c", role="user", content=f"m{i}") for i in range(3)
    )
    assert run(tmp_path, *db, "ingest", "-", stdin=ops).returncode == 0
    cursors = [c["cursor"] for c in _changes(run(tmp_path, *db, "changes").stdout)]
    assert run(tmp_path, *db, "changes", "trim", "--before", str(cursors[2])).returncode == 0
    old = run(tmp_path, *db, "changes", "--after", "0")
    assert old.returncode == 1
    assert old.stderr.startswith("anchorline: error: after: cursor 0 is older than"), old.stderr
    assert old.stderr.count("\n") == 1, old.stderr  # no pool warning about a discarded one
