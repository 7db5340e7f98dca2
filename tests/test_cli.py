"""The ``anchorline`` command, run as a user would: a subprocess in a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``anchorline ARGS`` in ``cwd``, without entry-point plugins unless ``env`` says so."""
    environment = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
    environment.pop("ANCHORLINE_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "anchorline.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=120,
    )


def line(kind: str, **fields: object) -> str:
    return json.dumps({"kind": kind, **fields})


def test_demo_plays_an_agent_turn_and_a_second_run_adds_a_conversation(tmp_path: Path) -> None:
    first = run(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    assert "reserved message id" in first.stdout
    assert first.stdout.count("partial flush") >= 2
    assert "complete" in first.stdout and "to a stable id." in first.stdout
    assert (tmp_path / "anchorline.db").exists()
    second = run(tmp_path, "demo")
    assert second.returncode == 0, second.stderr
    conversation = [
        ln.split()[1] for ln in second.stdout.splitlines() if ln.startswith("conversation")
    ]
    assert conversation and conversation[0] not in first.stdout
    shown = run(tmp_path, "show", conversation[0])
    assert shown.returncode == 0 and "assistant" in shown.stdout and "user" in shown.stdout


def test_ingest_applies_valid_lines_and_reports_invalid_ones(tmp_path: Path) -> None:
    ops = "\n".join(
        [
            line("add", conversation_id="c", role="user", content="hi", message_id="m1"),
            line("add", conversation_id="c", role="robot", content="hi"),
            "{not json",
            "",
            line("update", message_id="m1", metadata={"seen": True}),
            line("update_content", message_id="missing", content="x"),
        ]
    )
    (tmp_path / "ops.jsonl").write_text(ops)
    result = run(tmp_path, "ingest", "ops.jsonl")
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: role:")
    assert errors[1].startswith("line 3: not JSON")
    assert errors[2].startswith("line 6: message_id:")
    assert len(errors) == 3
    assert "applied 2, invalid 3" in result.stdout
    shown = run(tmp_path, "show", "c")
    assert "hi" in shown.stdout


def test_ingest_reads_standard_input_and_exits_0_when_all_lines_apply(tmp_path: Path) -> None:
    ops = (
        line("reserve", conversation_id="c", role="assistant", message_id="a")
        + "\n"
        + line("update_content", message_id="a", content="streamed")
    )
    result = run(tmp_path, "ingest", "-", stdin=ops)
    assert result.returncode == 0, result.stderr
    assert "applied 2, invalid 0" in result.stdout


def test_ingest_atomic_applies_nothing_when_a_line_fails(tmp_path: Path) -> None:
    ops = "\n".join(
        [
            line("add", conversation_id="c", role="user", content="one"),
            line("update_content", message_id="missing", content="x"),
        ]
    )
    result = run(tmp_path, "ingest", "--atomic", "-", stdin=ops)
    assert result.returncode == 1
    assert result.stderr.startswith("line 2: message_id:")
    assert "nothing applied" in result.stdout
    assert run(tmp_path, "show", "c").returncode == 1


def test_plugins_lists_plugins_and_hook_order(tmp_path: Path) -> None:
    assert run(tmp_path, "ingest", "-", stdin="").returncode == 0
    result = run(tmp_path, "plugins")
    assert result.returncode == 0, result.stderr
    assert "terminal" in result.stdout and "StoreTerminal" in result.stdout
    assert "SQLiteStore" in result.stdout
    assert "persist" in result.stdout and "trylast" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--db", ":memory:", "show", "nobody"), "no messages in conversation"),
        (("ingest", "missing.jsonl"), "cannot read missing.jsonl"),
        (("frobnicate",), "invalid choice"),
        (("--db", "notes.txt", "show", "c"), "not a SQLite database"),
        (("--db", ":memory:", "sweep", "--older-than", "nan"), "--older-than: must be a number"),
        (("--db", ":memory:", "sweep", "--older-than", "inf"), "--older-than: must be a number"),
        (("--db", ":memory:", "sweep", "--older-than", "1e300"), "--older-than: must be a number"),
        (("show", os.fsdecode(b"c\xff")), "conversation_id: 'c\\xff' is not valid UTF-8"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    result = run(tmp_path, *args)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_ingest_creates_no_file(tmp_path: Path) -> None:
    result = run(tmp_path, "ingest", "missing.jsonl")
    assert result.returncode == 1
    assert "cannot read missing.jsonl" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "help_named"),
    [
        (("show",), "(see anchorline show --help)"),
        (("ingest", "a.jsonl", "--atomc"), "(see anchorline ingest --help)"),
        (("index", "optimize", "a", "b"), "(see anchorline index optimize --help)"),
        (("--dbb", "x", "show", "c"), "(see anchorline --help)"),
    ],
)
def test_an_argument_error_names_the_help_of_its_command(
    tmp_path: Path, args: tuple[str, ...], help_named: str
) -> None:
    result = run(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.rstrip().endswith(help_named)


def test_the_db_comes_from_the_environment(tmp_path: Path) -> None:
    env_db = tmp_path / "from-env.db"
    env = {**os.environ, "ANCHORLINE_DB": str(env_db), "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "anchorline.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert env_db.exists() and not (tmp_path / "anchorline.db").exists()


def test_an_empty_database_setting_means_the_default_and_an_empty_flag_is_one_line(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "ANCHORLINE_DB": "", "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "anchorline.cli", "--index", "none", "ingest", "-"],
        cwd=tmp_path,
        input=line("add", conversation_id="c", role="user", content="x"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "anchorline.db").exists()
    empty = run(tmp_path, "--db", "", "show", "c")
    assert empty.returncode == 1
    assert empty.stderr.startswith("anchorline: error: --db: empty; name a database file")


def test_demo_ends_with_a_search_that_finds_the_turn(tmp_path: Path) -> None:
    result = run(tmp_path, "demo")
    assert result.returncode == 0, result.stderr
    assistant_id = next(
        ln.split("reserved message id ")[1].split()[0]
        for ln in result.stdout.splitlines()
        if "reserved message id" in ln
    )
    assert f"finds {assistant_id}" in result.stdout
    assert (tmp_path / "anchorline.db.index").is_dir()


def test_search_reindex_and_doctor(tmp_path: Path) -> None:
    ops = "\n".join(
        line("add", conversation_id=topic, role="user", content=text)
        for topic, text in [
            ("kitchen", "bake the sourdough bread at high heat"),
            ("space", "the rocket reached orbit after stage separation"),
            ("money", "the invoice was paid by bank transfer"),
        ]
    )
    assert run(tmp_path, "ingest", "-", stdin=ops).returncode == 0
    found = run(tmp_path, "search", "rocket orbit", "--limit", "1")
    assert found.returncode == 0, found.stderr
    assert "space" in found.stdout and "kitchen" not in found.stdout
    scoped = run(tmp_path, "search", "rocket orbit", "--conversation", "money")
    assert "space" not in scoped.stdout and "money" in scoped.stdout
    doctor = run(tmp_path, "doctor")
    assert doctor.returncode == 0 and "clean" in doctor.stdout
    reindex = run(tmp_path, "reindex")
    assert reindex.returncode == 0, reindex.stderr
    assert "reindexed 3 message(s)" in reindex.stdout
    assert run(tmp_path, "doctor").returncode == 0


def test_index_commands_without_an_index_explain_themselves(tmp_path: Path) -> None:
    result = run(tmp_path, "--db", ":memory:", "--index", "none", "search", "x")
    assert result.returncode == 1
    assert result.stderr.startswith("anchorline: error: no index")


def test_sweep_recovers_a_placeholder_left_by_a_killed_writer(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from anchorline import Pipeline\n"
        "p = Pipeline.open('anchorline.db', load_entrypoints=False)\n"
        "s = p.stream('c', flush_interval=0).__enter__()\n"
        "s.append('streamed before the crash')\n"
        "print(s.message_id, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert killed.returncode == -9
    message_id = killed.stdout.strip()
    result = run(tmp_path, "sweep", "--older-than", "0")
    assert result.returncode == 0, result.stderr
    assert f"finalized {message_id}" in result.stdout
    assert "swept 1: 0 deleted, 1 finalized" in result.stdout
    assert "streamed before the crash" in run(tmp_path, "show", "c").stdout


def test_an_unexpected_error_is_one_line_too_unless_debugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchorline import Pipeline
    from anchorline.cli import main

    def broken(self: Pipeline, conversation_id: str, limit: int | None = None) -> list[object]:
        raise RuntimeError("disk gremlin")  # an injected fault, not a real code path

    monkeypatch.setattr(Pipeline, "messages", broken)
    db = ":memory:"
    assert main(["--db", db, "--index", "none", "show", "c1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: disk gremlin" in err
    assert "ANCHORLINE_DEBUG=1" in err
    monkeypatch.setenv("ANCHORLINE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk gremlin"):
        main(["--db", db, "--index", "none", "show", "c1"])


def test_show_and_search_print_what_a_message_holds_as_it_is(tmp_path: Path) -> None:
    content = "[bold]x[/bold] and [red] and :smile: end\\"
    ops = line("add", conversation_id="[c1]", role="user", content=content)
    assert run(tmp_path, "ingest", "-", stdin=ops).returncode == 0
    shown = run(tmp_path, "show", "[c1]")
    assert shown.returncode == 0, shown.stderr
    assert content in shown.stdout
    found = run(tmp_path, "search", "bold red smile")
    assert found.returncode == 0, found.stderr
    assert content in found.stdout and "[c1]" in found.stdout


def test_show_puts_each_content_block_on_its_own_line(tmp_path: Path) -> None:
    blocks = [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "t1", "name": "maps", "input": {}},
        {"type": "text", "text": "Found it."},
    ]
    ops = line("add", conversation_id="c1", role="assistant", content=blocks)
    assert run(tmp_path, "ingest", "-", stdin=ops).returncode == 0
    shown = run(tmp_path, "show", "c1")
    assert shown.returncode == 0, shown.stderr
    lines = [ln.strip(" │|") for ln in shown.stdout.splitlines()]
    assert any(ln.endswith("Let me look.") for ln in lines), shown.stdout
    assert any(ln.endswith("[tool_use]") for ln in lines), shown.stdout
    assert any(ln.endswith("Found it.") for ln in lines), shown.stdout
    assert "look.[tool_use]" not in shown.stdout


def test_text_the_terminal_cannot_show_is_escaped_not_a_crash(tmp_path: Path) -> None:
    ops = line("add", conversation_id="c", role="user", content="caf\u00e9 \U0001f600")
    assert run(tmp_path, "ingest", "-", stdin=ops).returncode == 0
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONIOENCODING": "ascii"}
    env.pop("ANCHORLINE_DB", None)
    result = subprocess.run(
        [sys.executable, "-m", "anchorline.cli", "show", "c"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9 \\U0001f600" in result.stdout


def test_a_failing_observer_is_one_line_without_traceback_and_the_write_stands(
    tmp_path: Path,
) -> None:
    script = (
        "import sys\n"
        "from anchorline import hookimpl\n"
        "from anchorline.cli import main\n"
        "from anchorline.plugins.indexer import Indexer\n"
        "@hookimpl\n"
        "def after_persist(self, op, result, context):\n"
        "    raise RuntimeError('observer gremlin')  # an injected fault\n"
        "Indexer.after_persist = after_persist\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, "--db", "a.db", "--index", ":memory:", "ingest", "-"],
        cwd=tmp_path,
        input=line("add", conversation_id="c", role="user", content="kept"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "anchorline: warning: after_persist in plugin 'indexer' failed:"
        " RuntimeError: observer gremlin\n"
    )
    assert "kept" in run(tmp_path, "--db", "a.db", "show", "c").stdout


def test_index_commands_on_a_server_database_say_it_has_no_index_by_default(
    tmp_path: Path,
) -> None:
    server = "postgresql://nobody@127.0.0.1:1/none"  # never reached: refused before connecting
    search = run(tmp_path, "--db", server, "search", "hello")
    assert search.returncode == 1
    assert search.stderr == (
        "anchorline: error: no index: a database server has none by default; name the Qdrant"
        " server with --index URL (or $ANCHORLINE_INDEX)\n"
    )
    optimize = run(tmp_path, "--db", server, "index", "optimize")
    assert optimize.returncode == 1
    assert "a database server has no index folder" in optimize.stderr
    none = run(tmp_path, "--index", "none", "index", "optimize")
    assert none.returncode == 1
    assert "--index none: there is no index to optimize" in none.stderr
    assert list(tmp_path.iterdir()) == []
