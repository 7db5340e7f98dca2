"""`anchorline bench` runs every case and reports ratios; --quick only proves it works."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import attrs
import pytest

from anchorline.bench import QUICK, run_bench
from anchorline.bench.peers import peer_cases
from anchorline.bench.postgres import with_database
from anchorline.bench.workloads import CONTENT
from anchorline.cli import main
from tests.support.postgres_server import Server


def test_quick_bench_reports_every_case_and_comparison_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-peers", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    cases = report["cases"]
    for name in ("persist(Add)", "raw insert", "reserve + final", "raw insert + update",
                 "persist_many(100)", "raw executemany(100)", "stream turn", "raw turn",
                 "last 50 @ 1k", "last 50 @ 5k", "search @ 100", "search @ 500"):  # fmt: skip
        assert len(cases[name]["samples"]) == QUICK.rounds, name
        assert all(s > 0 for s in cases[name]["samples"]), name
    labels = {c["label"]: c for c in report["comparisons"]}
    add = labels["persist(Add) vs raw insert"]
    assert add["target"] == ">= 0.85x"
    assert add["ratio"]["median"] > 0 and add["met"] in (True, False)
    assert labels["last 50 @ 5k / @ 1k"]["kind"] == "flat"
    assert report["skipped"] == ["peers: left out with --no-peers"]
    assert report["machine"]["sqlite"]
    printed = capsys.readouterr().out
    assert "persist(Add)" in printed and ">= 0.85x" in printed


def test_the_streamed_turn_writes_what_the_raw_turn_writes(tmp_path: Path) -> None:
    """Both sides of a comparison do the same work: same final rows, same partial count."""
    import apsw

    from anchorline.bench.workloads import write_cases

    cases, _ = write_cases(tmp_path, ops=1, pairs=1, batches=1, batch_size=3, turns=2)
    for case in cases:
        case.prepare()(case.count)
    rows = {}
    for name in ("turn", "raw-turn", "pair", "raw-pair", "many", "raw-many"):
        conn = apsw.Connection(str(tmp_path / f"{name}.db"))
        rows[name] = conn.execute(
            "SELECT role, content, status FROM messages ORDER BY rowid"
        ).fetchall()
        conn.close()
    assert rows["turn"] == rows["raw-turn"] and len(rows["turn"]) == 2
    assert rows["pair"] == rows["raw-pair"] and rows["pair"][0][2] == "complete"
    assert rows["many"] == rows["raw-many"] and len(rows["many"]) == 3


def test_a_missing_peer_is_skipped_with_the_command_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "agents" else real(name, *a)
    )
    skipped: list[str] = []
    cases, comparisons = peer_cases(
        tmp_path, items=1, batches=1, batch_size=2, facts={}, skipped=skipped
    )
    assert any(s.startswith("OpenAI Agents") and "pip install 'anchorline[bench]'" in s
               for s in skipped)  # fmt: skip
    assert not any("OpenAI" in c.name for c in cases)
    assert not any("OpenAI" in c.label for c in comparisons)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [(["--rounds", "0"], "--rounds: must be at least 1"),
     (["--json", "/no/such/folder/b.json"], "--json: folder"),
     (["--dir", "/no/such/folder"], "--dir: folder")],
)  # fmt: skip
def test_bad_bench_options_get_one_line_and_status_2(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1


def test_run_bench_cleans_up_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from anchorline.bench import Config

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its scratch folder goes
    config = Config(rounds=1, ops=5, pairs=2, batches=1, batch_size=5, turns=1, reads=2,
                    read_sizes=(300,), queries=1, search_sizes=(50,), peers=False)  # fmt: skip
    report = run_bench(config)
    assert list(tmp_path.iterdir()) == []
    assert report.timed["persist(Add)"].per_unit[0] > 0
    assert {c.comparison.label for c in report.compared} >= {"persist(Add) vs raw insert"}


def test_the_bench_works_in_the_folder_given_and_leaves_it_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--quick", "--no-peers", "--rounds", "1", "--dir", str(tmp_path)]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "persist(Add)" in capsys.readouterr().out


def test_a_full_disk_is_one_line_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import apsw

    import anchorline.bench

    def full(*args: object, **kwargs: object) -> None:
        raise apsw.FullError("database or disk is full")  # an injected fault

    monkeypatch.setattr(anchorline.bench, "run_bench", full)
    assert main(["bench", "--quick", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk is full" in err and "--dir" in err


def test_the_raw_read_returns_the_messages_the_pipeline_returns(tmp_path: Path) -> None:
    from anchorline.bench.workloads import read_cases

    cases, comparisons, closers = read_cases(tmp_path, (1_000, 3_000), reads=2)
    try:
        assert [c.name for c in cases][:2] == ["last 50 @ 1k", "raw last 50 @ 1k"]
        assert {c.label for c in comparisons} >= {"last 50 @ 3k / @ 1k"}
        import apsw

        from anchorline import Pipeline

        with Pipeline.open(str(tmp_path / "read-3000.db"), load_entrypoints=False) as pipeline:
            ours = [m.id for m in pipeline.messages("c7", limit=50)]
        conn = apsw.Connection(str(tmp_path / "read-3000.db"))
        from anchorline.bench.workloads import RAW_LAST_50

        raw = [row[0] for row in conn.execute(RAW_LAST_50, ("c7", 50))]
        conn.close()
        assert len(ours) == 50 and ours == raw
    finally:
        for close in closers:
            close()


def test_the_peers_store_the_same_content(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    pytest.importorskip("langchain_community")
    import asyncio

    from agents import SQLiteSession
    from langchain_community.chat_message_histories import SQLChatMessageHistory

    from anchorline.bench.workloads import CONTENT

    facts: dict[str, str] = {}
    cases, _ = peer_cases(tmp_path, items=2, batches=1, batch_size=3, facts=facts, skipped=[])
    for case in cases:
        if "OpenAI" in case.name or "LangChain" in case.name:
            case.prepare()(case.count)
    session = SQLiteSession("bench", str(tmp_path / "openai-3.db"))
    items = asyncio.run(session.get_items())
    session.close()
    assert len(items) == 3 and all(i["content"] == CONTENT for i in items)
    history = SQLChatMessageHistory(
        session_id="bench", connection=f"sqlite:///{tmp_path / 'langchain.db'}"
    )
    assert [m.content for m in history.messages] == [CONTENT, CONTENT]
    assert "synchronous=FULL" in facts["OpenAI Agents SQLiteSession"]


def test_a_peer_that_fails_is_skipped_with_its_error_and_the_rest_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = pytest.importorskip("agents")

    async def broken(self: object, items: object) -> None:
        raise TypeError("add_items() got an unexpected keyword")  # an injected fault

    monkeypatch.setattr(agents.SQLiteSession, "add_items", broken)
    skipped: list[str] = []
    cases, comparisons = peer_cases(
        tmp_path, items=1, batches=1, batch_size=2, facts={}, skipped=skipped
    )
    assert skipped == [
        "OpenAI Agents SQLiteSession: failed on a first try"
        " (TypeError: add_items() got an unexpected keyword)"
    ]
    assert not any("OpenAI" in c.name for c in cases)
    assert not any("OpenAI" in c.label for c in comparisons)
    if importlib.util.find_spec("langchain_community") is not None:
        assert [c.name for c in cases] == ["LangChain add_message"]


def test_the_report_prints_install_hints_and_error_texts_as_they_are() -> None:
    import io

    from rich.console import Console

    from anchorline.bench.peers import INSTALL, OPENAI
    from anchorline.bench.report import Report, print_report

    report = Report(
        rounds=1, quick=True, timed={}, compared=[], seconds=1.0,
        skipped=[f"{OPENAI}: agents not installed ({INSTALL})",
                 "LangChain: failed on a first try (TypeError: no [bold]field[/bold] [red])"],
        facts={"Peer [x]": "journal_mode=wal, synchronous=[FULL]"},
    )  # fmt: skip
    printed = io.StringIO()
    print_report(report, Console(file=printed, width=300, highlight=False))
    text = printed.getvalue()
    assert "pip install 'anchorline[bench]'" in text
    assert "(TypeError: no [bold]field[/bold] [red])" in text
    assert "Peer [x] ran with journal_mode=wal, synchronous=[FULL]" in text


# --- on a PostgreSQL server -----------------------------------------------------------


def _scratch_left(conninfo: str, url: str) -> list[str]:
    """The bench's databases left on the server, and any schema or table left in the
    database it was given."""
    import psycopg

    from anchorline.bench.postgres import PREFIX

    with psycopg.connect(conninfo) as conn:
        left = [
            name
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
            )
        ]
    with psycopg.connect(url) as conn:
        left += [
            f"{schema}.{table}"
            for schema, table in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ]
        left += [
            schema
            for (schema,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
                " AND nspname NOT IN ('public', 'information_schema')"
            )
        ]
    return left


def test_quick_bench_on_postgres_times_each_write_against_its_twin_and_leaves_nothing(
    postgres_server: Server, postgres_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--db", postgres_url, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["store"].startswith("PostgreSQL at postgresql://")
    for name in ("persist(Add)", "raw insert", "reserve + final", "raw insert + update",
                 "persist_many(100)", "raw executemany(100)", "4 writers persist(Add)",
                 "4 writers raw insert", "raw insert, logged", "raw insert + update, logged",
                 "4 writers raw insert, logged"):  # fmt: skip
        assert len(report["cases"][name]["samples"]) == QUICK.rounds, name
        assert all(s > 0 for s in report["cases"][name]["samples"]), name
    assert not any(name.startswith(("last 50", "search", "stream")) for name in report["cases"])
    labels = {c["label"]: c for c in report["comparisons"]}
    for label, target in (
        ("persist(Add) vs raw insert", ">= 0.80x"),
        ("reserve + final vs raw pair", ">= 0.80x"),
        ("persist_many(100) vs raw executemany(100)", ">= 0.70x"),
        ("4 writers persist(Add) vs 4 writers raw insert", ">= 0.80x"),
    ):
        assert labels[label]["target"] == target, label
        assert labels[label]["ratio"]["median"] > 0 and labels[label]["met"] in (True, False)
    assert any(key.startswith("PostgreSQL ") and "fsync=" in value
               for key, value in report["peer_settings"].items())  # fmt: skip
    printed = capsys.readouterr().out
    assert "4 writers persist(Add)" in printed and "fsync=off" in printed
    assert _scratch_left(postgres_server.conninfo, postgres_url) == []


def test_the_postgres_twins_write_the_rows_the_pipeline_writes(
    postgres_server: Server, postgres_url: str
) -> None:
    import psycopg

    from anchorline.bench.postgres import RAW_SCHEMA, Scratch, postgres_cases, writers

    counts = {"add": 3, "pair": 2, "many": 2 * 4, "writers": 2 * 3}
    with Scratch(postgres_url) as scratch, writers(2) as pool:
        cases, _ = postgres_cases(scratch, pool, ops=3, pairs=2, batches=2, batch_size=4,
                                  writer_ops=3)  # fmt: skip
        for case in cases:
            case.prepare()(case.count)
        rows, feeds = {}, {}
        for name in scratch.names:
            label = name.rpartition("_")[2]
            with psycopg.connect(with_database(postgres_url, name)) as conn:
                for schema in ("anchorline", RAW_SCHEMA):
                    rows[label, schema] = conn.execute(
                        "SELECT id, conversation_id, role, content, metadata, status,"
                        f" client_message_id, created_at, updated_at FROM {schema}.messages"
                        " ORDER BY rowid"
                    ).fetchall()
                    feeds[label, schema] = conn.execute(
                        f"SELECT kind, final FROM {schema}.changes ORDER BY cursor"
                    ).fetchall()
    assert sorted(label for label, _ in rows) == sorted(2 * list(counts))
    # The logged twins (the last of each raw side) write the feed rows the pipeline writes.
    assert feeds["add", "anchorline"] == feeds["add", RAW_SCHEMA] == [("add", True)] * 3
    assert feeds["pair", "anchorline"] == feeds["pair", RAW_SCHEMA] == [
        ("reserve", False), ("update_content", True)
    ] * 2  # fmt: skip
    assert len(feeds["writers", RAW_SCHEMA]) == len(feeds["writers", "anchorline"]) == 6
    for label, count in counts.items():
        ours, theirs = rows[label, "anchorline"], rows[label, RAW_SCHEMA]
        assert [r[1:7] for r in ours] == [r[1:7] for r in theirs], label
        assert len(ours) == count and ours[0][5] == "complete", label
        for side in (ours, theirs):
            ids = [r[0] for r in side]
            assert len(set(ids)) == count and all(i[14] == "7" for i in ids), label
            assert all(r[7] <= r[8] for r in side), label
    assert rows["add", "anchorline"][0][3] == json.dumps(CONTENT)
    assert _scratch_left(postgres_server.conninfo, postgres_url) == []


def test_a_postgres_bench_stopped_by_ctrl_c_drops_its_databases_and_ends_its_writers(
    postgres_server: Server, postgres_url: str
) -> None:
    import multiprocessing

    seen: list[str] = []

    def interrupt(text: str) -> None:
        seen.append(text)
        if text.startswith("round 1/") and len(seen) > 8:
            raise KeyboardInterrupt  # as Ctrl-C would, halfway through the first round

    config = attrs.evolve(QUICK, db=postgres_url)
    with pytest.raises(KeyboardInterrupt):
        run_bench(config, progress=interrupt)
    assert any(text.startswith("round 1/") for text in seen)
    assert _scratch_left(postgres_server.conninfo, postgres_url) == []
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("db", ["bench.db", "sqlite:///bench.db"])
def test_the_bench_takes_only_a_postgres_url_for_db(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--quick", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "--db: the bench measures a PostgreSQL server" in err
    assert len(err.strip().splitlines()) == 1
