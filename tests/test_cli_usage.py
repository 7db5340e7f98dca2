"""The command line as people type it: options anywhere, --version, output for a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import anchorline
from anchorline import ConfigurationError, Pipeline

from .test_cli import line, run
from .test_cli_readonly import listing

#: Every command that opens a database, as its --help is asked for.
DATABASE_COMMANDS = [
    ("demo",), ("show",), ("ingest",), ("plugins",), ("search",), ("reindex",), ("sweep",),
    ("doctor",), ("index-worker",), ("changes",), ("index", "optimize"),
]  # fmt: skip


def ingest(folder: Path, *lines: str, db: str = "anchorline.db") -> None:
    added = run(folder, "--db", db, "--index", "none", "ingest", "-", stdin="\n".join(lines))
    assert added.returncode == 0, added.stderr


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_every_command_that_opens_a_database_lists_db_and_index_in_its_help(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    shown = run(tmp_path, *command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "--db DB" in shown.stdout and "--index INDEX" in shown.stdout
    assert "``" not in shown.stdout  # reST's backticks are not for a terminal


def test_db_and_index_are_taken_after_the_command_too(tmp_path: Path) -> None:
    ingest(tmp_path, line("add", conversation_id="c1", role="user", content="hello"), db="x.db")
    shown = run(tmp_path, "show", "c1", "--db", "x.db")
    assert shown.returncode == 0, shown.stderr
    assert "hello" in shown.stdout
    changes = run(tmp_path, "changes", "--db", "x.db")
    assert changes.returncode == 0 and json.loads(changes.stdout)["kind"] == "add"
    assert run(tmp_path, "changes", "x.db").stdout == changes.stdout  # the positional stays
    # Given after the command, it wins over the one before it.
    assert run(tmp_path, "--db", "other.db", "show", "c1", "--db", "x.db").returncode == 0
    reindexed = run(tmp_path, "reindex", "--db", "x.db", "--index", "idx")
    assert reindexed.returncode == 0, reindexed.stderr
    assert (tmp_path / "idx").is_dir()
    found = run(tmp_path, "search", "hello", "--index=idx", "--db=x.db")
    assert found.returncode == 0 and "hello" in found.stdout, found.stderr
    optimized = run(tmp_path, "index", "optimize", "--db", "x.db", "--index", "idx")
    assert optimized.returncode == 0, optimized.stderr
    assert listing(tmp_path) == ["idx", "x.db"]


def test_an_unknown_option_before_the_command_is_named_with_a_suggestion(tmp_path: Path) -> None:
    result = run(tmp_path, "--dbb", "x", "show", "c1")
    assert result.returncode == 2
    assert "unrecognized option '--dbb'; did you mean --db?" in result.stderr
    assert "invalid choice" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_version_is_the_package_version_string(tmp_path: Path) -> None:
    shown = run(tmp_path, "--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"anchorline {anchorline.__version__}"
    assert isinstance(anchorline.__version__, str) and anchorline.__version__[0].isdigit()
    assert not hasattr(anchorline, "version")
    assert not hasattr(anchorline, "PackageNotFoundError")


def test_plugins_works_without_a_database_and_creates_none(tmp_path: Path) -> None:
    listed = run(tmp_path, "plugins")
    assert listed.returncode == 0, listed.stderr
    assert "terminal" in listed.stdout and "persist" in listed.stdout
    assert "no database at" in listed.stdout
    assert listing(tmp_path) == []


def test_show_prints_plain_text_to_a_pipe_and_json_lines_with_json(tmp_path: Path) -> None:
    ingest(
        tmp_path,
        line("add", conversation_id="c1", role="user", content="first line\nsecond line"),
        line(
            "add", conversation_id="c1", role="assistant", content=[{"type": "text", "text": "ok"}]
        ),
    )
    shown = run(tmp_path, "show", "c1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("user complete ") and lines[1:3] == ["  first line", "  second line"]
    assert lines[3].startswith("assistant complete ") and lines[4] == "  ok"
    assert not any(c in shown.stdout for c in "│┃━─┏")  # no table drawn into a pipe
    as_json = run(tmp_path, "show", "c1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    messages = [json.loads(ln) for ln in as_json.stdout.splitlines()]
    assert [m["content"] for m in messages] == [
        "first line\nsecond line",
        [{"type": "text", "text": "ok"}],
    ]
    assert [m["seq"] for m in messages] == [1, 2] and messages[0]["role"] == "user"


def test_copy_refuses_to_copy_a_store_onto_itself(tmp_path: Path) -> None:
    ingest(tmp_path, line("add", conversation_id="c1", role="user", content="x"), db="a.db")
    before = (tmp_path / "a.db").read_bytes()
    for target in ("a.db", "./a.db", str(tmp_path / "a.db")):
        refused = run(tmp_path, "copy", "a.db", target)
        assert refused.returncode == 1
        assert "is the source itself" in refused.stderr and refused.stderr.count("\n") == 1
    assert (tmp_path / "a.db").read_bytes() == before
    assert listing(tmp_path) == ["a.db"]


def test_copy_says_that_the_copy_has_no_index_and_search_works_after_reindex(
    tmp_path: Path,
) -> None:
    ingest(tmp_path, line("add", conversation_id="c1", role="user", content="lisbon trip"),
           db="a.db")  # fmt: skip
    copied = run(tmp_path, "copy", "a.db", "b.db")
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.splitlines()[0].startswith("copied 1 message(s)")  # no blank line
    assert "b.db has no index yet" in copied.stdout
    assert "'anchorline --db b.db reindex'" in copied.stdout
    assert run(tmp_path, "--db", "b.db", "reindex").returncode == 0
    found = run(tmp_path, "--db", "b.db", "search", "lisbon")
    assert found.returncode == 0 and "lisbon trip" in found.stdout, found.stderr
    again = run(tmp_path, "copy", "a.db", "b.db")
    assert "has no index" not in again.stdout


def test_index_optimize_prints_no_blank_line(tmp_path: Path) -> None:
    ingest(tmp_path, line("add", conversation_id="c1", role="user", content="x"))
    assert run(tmp_path, "reindex").returncode == 0
    optimized = run(tmp_path, "index", "optimize")
    assert optimized.returncode == 0, optimized.stderr
    assert optimized.stderr == ""
    assert optimized.stdout.count("\n") == 1 and optimized.stdout.strip()


@pytest.mark.parametrize("command", [("changes", "--limit", "2000"), ("show", "c")], ids=str)
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path, command: tuple[str, ...]) -> None:
    ops = [line("add", conversation_id="c", role="user", content="x" * 40) for _ in range(2000)]
    ingest(tmp_path, *ops)
    environment = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    reader = subprocess.Popen(
        [sys.executable, "-m", "anchorline.cli", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()  # as `| head -1` does: far more than a pipe's buffer is left
    status = reader.wait(timeout=60)
    assert first.strip()
    assert reader.stderr.read() == b""
    assert status == 141  # as if SIGPIPE had ended it, like any other command in a pipe


def test_a_mistyped_postgresql_url_is_refused_not_taken_for_a_file(tmp_path: Path) -> None:
    for command in (("show", "c1"), ("demo",), ("ingest", "-")):
        refused = run(tmp_path, "--db", "postgresql:/x@host/db", *command, stdin="")
        assert refused.returncode == 1
        assert "'postgresql:/x@host/db' looks like a mistyped URL" in refused.stderr
        assert refused.stderr.count("\n") == 1
    refused = run(tmp_path, "copy", "postgres:x@host/db", "b.db")
    assert refused.returncode == 1 and "looks like a mistyped URL" in refused.stderr
    assert listing(tmp_path) == []
    with pytest.raises(ConfigurationError, match="looks like a mistyped URL"):
        Pipeline.open("postgresql:/x@host/db", load_entrypoints=False)
    assert listing(tmp_path) == []


def test_the_readme_makes_a_venv_before_its_set_up_commands() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    set_up = readme.split("## Set up on a fresh machine")[1].split("\n## ")[0]
    venv = set_up.index("python3 -m venv .venv && . .venv/bin/activate")
    for which in ("demo", "test"):
        marker = set_up.index(f"<!-- {which} command -->\n```sh\npython3 -m pip install ")
        assert venv < marker  # CI's .ci/run reads the marked commands; it makes its own venv
