"""A PostgreSQL password never reaches the screen or a log, and the driver's own
warnings come out as the CLI's one-line warnings."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from anchorline import Add, Pipeline
from anchorline.cli import main

PASSWORD = "Sup3rSecretPW"


def with_password(url: str) -> str:
    """``url`` (``postgresql://user@/db?host=...``; the test server trusts local users,
    so any password works) with ``PASSWORD`` in it."""
    scheme, _, rest = url.partition("://")
    user, _, after = rest.partition("@")
    return f"{scheme}://{user}:{PASSWORD}@{after}"


def environment() -> dict[str, str]:
    return {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}


def anchorline(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "anchorline.cli", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=environment(), timeout=300,
                          check=False)  # fmt: skip


def started(cwd: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "anchorline.cli", *args]
    return subprocess.Popen(command, cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=environment())  # fmt: skip


def stopped(process: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return out, err


def test_no_command_prints_the_password_of_a_postgresql_url(
    postgres_url: str, tmp_path: Path
) -> None:
    url = with_password(postgres_url)
    index = str(tmp_path / "idx")
    added = "\n".join(
        json.dumps({"kind": "add", "conversation_id": "c", "role": "user", "content": text})
        for text in ("hello there", "another")
    )
    outputs: dict[str, str] = {}

    def check(name: str, result: subprocess.CompletedProcess[str], status: int = 0) -> None:
        assert result.returncode == status, (name, result.stdout, result.stderr)
        outputs[name] = result.stdout + result.stderr

    check("ingest", anchorline(tmp_path, "--db", url, "--index", index, "ingest", "-",
                               stdin=added))  # fmt: skip
    for command in (("show", "c"), ("show", "c", "--json"), ("plugins",), ("sweep",),
                    ("changes",), ("reindex",), ("search", "hello"), ("doctor",)):  # fmt: skip
        check(" ".join(command), anchorline(tmp_path, "--db", url, "--index", index, *command))
    check("copy out", anchorline(tmp_path, "copy", url, "copy.db"))
    check("copy in", anchorline(tmp_path, "copy", "copy.db", url))
    # Failures name the database too.
    check("show missing", anchorline(tmp_path, "--db", url, "show", "nobody"), status=1)
    wrong_db = url.replace("@/", "@/no_such_db_").split("?")[0] + "?" + url.split("?")[1]
    check("no such database", anchorline(tmp_path, "--db", wrong_db, "show", "c"), status=1)
    refused = f"postgresql://agent:{PASSWORD}@127.0.0.1:1/db"
    check("refused", anchorline(tmp_path, "--db", refused, "demo"), status=1)
    check("mistyped", anchorline(tmp_path, "--db", f"postgresql:/agent:{PASSWORD}@h/db", "show",
                                 "c"), status=1)  # fmt: skip
    check("with index", anchorline(tmp_path, "--db", url, "--index",
                                   f"http://agent:{PASSWORD}@127.0.0.1:1", "search", "x"),
          status=1)  # fmt: skip
    # The long-running ones: their banners, and what they print when stopped.
    worker = started(tmp_path, "--db", url, "--index", index, "index-worker")
    assert worker.stdout is not None
    banner = worker.stdout.readline()
    assert "index worker" in banner
    out, err = stopped(worker, signal.SIGTERM)
    outputs["index-worker"] = banner + out + err
    follower = started(tmp_path, "--db", url, "changes", "--follow")
    assert follower.stdout is not None
    first = follower.stdout.readline()
    out, err = stopped(follower, signal.SIGINT)
    outputs["changes --follow"] = first + out + err
    bench = anchorline(tmp_path, "bench", "--quick", "--no-peers", "--rounds", "1", "--db", url)
    check("bench", bench)
    for name, text in outputs.items():
        assert PASSWORD not in text, (name, text)
    assert "postgresql://postgres:***@" in outputs["index-worker"]  # the URL, masked
    assert "agent:***@" in outputs["mistyped"]


def test_no_log_record_and_no_repr_holds_the_password(
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = with_password(postgres_url)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    with Pipeline.open(url, load_entrypoints=False) as pipeline:
        assert PASSWORD not in repr(pipeline) and "postgres:***@" in repr(pipeline)
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{not json\n")))
    for argv in (["show", "c"], ["changes"], ["plugins"], ["sweep"], ["ingest", "-"],
                 ["--index", "idx", "reindex"], ["copy", url, "c.db"]):  # fmt: skip
        main(["--db", url, *argv])
    main(["--db", f"postgresql://x:{PASSWORD}@127.0.0.1:1/db", "show", "c"])
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err
    assert caplog.records
    for record in caplog.records:
        text = logging.Formatter().format(record)
        assert PASSWORD not in text, text


def test_the_pools_warnings_when_connections_are_killed_are_one_line_each(
    postgres_url: str, tmp_path: Path
) -> None:
    with Pipeline.open(postgres_url, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="x"))
    follower = started(tmp_path, "--db", postgres_url, "changes", "--follow")
    assert follower.stdout is not None
    assert json.loads(follower.stdout.readline())["cursor"] == 1
    kill = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND datname = current_database() AND application_name = 'anchorline'"
    )
    with (
        Pipeline.open(postgres_url, load_entrypoints=False) as pipeline,
        psycopg.connect(postgres_url, autocommit=True) as admin,
    ):
        for i in range(5):
            admin.execute(kill)
            time.sleep(0.3)  # lets the follower find its connections dead
            pipeline.persist(Add(conversation_id="c", role="user", content=f"x{i}"))
            time.sleep(0.3)
    out, err = stopped(follower, signal.SIGINT)
    assert len(out.splitlines()) == 5  # every change came through
    lines = err.splitlines()
    assert lines[-1] == "anchorline: interrupted"
    warnings = lines[:-1]
    assert warnings, "no connection was lost"
    for text in warnings:
        assert text.startswith("anchorline: warning: psycopg.pool: "), err
        assert " at 0x" not in text
    assert len(warnings) == len(set(warnings))  # each said once
