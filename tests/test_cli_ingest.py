"""`anchorline ingest`: one bad line is reported and never stops the rest of the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from anchorline import Pipeline
from anchorline.cli import main

from .test_cli import line, run

GOOD = line("add", conversation_id="c", role="user", content="before", message_id="m1")
LAST = line("add", conversation_id="c", role="user", content="after")


def ingest_bytes(
    cwd: Path, data: bytes, *args: str, locale: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``anchorline ingest`` on ``data`` through standard input, as raw bytes."""
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    if locale is not None:
        env["LC_ALL"] = locale
    env.pop("ANCHORLINE_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "anchorline.cli", "--index", "none", "ingest", *args],
        cwd=cwd,
        input=data,
        capture_output=True,
        env=env,
        timeout=120,
    )


def stored(db: Path) -> list[object]:
    with Pipeline.open(str(db), load_entrypoints=False) as pipeline:
        return [m.content for m in pipeline.messages("c")]


@pytest.mark.parametrize("source", ["file", "stdin", "stdin in the C locale"])
def test_a_line_that_is_not_utf8_is_refused_and_the_rest_applied(
    tmp_path: Path, source: str
) -> None:
    bad = b'{"kind": "add", "conversation_id": "c", "role": "user", "content": "caf\xff"}'
    data = b"\n".join([GOOD.encode(), bad, LAST.encode()])
    if source == "file":
        (tmp_path / "ops.jsonl").write_bytes(data)
        result = ingest_bytes(tmp_path, b"", "ops.jsonl")
    else:
        locale = "C" if "C locale" in source else None  # where Python reads \xff as \udcff
        result = ingest_bytes(tmp_path, data, "-", locale=locale)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("line 2: not UTF-8: invalid start byte (byte 0xff")
    assert result.stderr.count(b"\n") == 1
    assert b"applied 2, invalid 1" in result.stdout
    assert stored(tmp_path / "anchorline.db") == ["before", "after"]  # never '\udcff'


def test_json_nested_ten_thousand_deep_is_refused_and_the_rest_applied(tmp_path: Path) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    result = ingest_bytes(tmp_path, "\n".join([GOOD, deep, LAST]).encode(), "-")
    assert result.returncode == 1
    assert result.stderr.decode() == "line 2: not JSON: nested too deeply\n"
    assert stored(tmp_path / "anchorline.db") == ["before", "after"]


def test_a_number_python_will_not_convert_is_refused_and_the_rest_applied(
    tmp_path: Path,
) -> None:
    huge = GOOD.replace('"message_id": "m1"', '"metadata": {"n": ' + "1" * 5000 + "}")
    result = ingest_bytes(tmp_path, "\n".join([huge, LAST]).encode(), "-")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("line 1: not JSON: ") and "4300 digits" in err
    assert "sys.set_int_max_str_digits" not in err
    assert err.count("\n") == 1
    assert stored(tmp_path / "anchorline.db") == ["after"]


def test_a_lone_surrogate_escape_is_refused_and_an_escaped_pair_is_text(tmp_path: Path) -> None:
    lone = line("add", conversation_id="c", role="user", content="\ud800")  # json writes \ud800
    pair = line("add", conversation_id="c", role="user", content="\U0001f600")  # \ud83d\ude00
    result = ingest_bytes(tmp_path, "\n".join([lone, pair]).encode(), "-")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("line 1: content: contains a lone surrogate")
    assert stored(tmp_path / "anchorline.db") == ["\U0001f600"]


def bad_lines_of_every_kind(tmp_path: Path) -> Path:
    """A file with each kind of bad line, between good ones: what each run must refuse."""
    lines = [
        GOOD.encode(),  # 1
        b'{"kind": "add", "conversation_id": "c", "role": "user", "content": "\xff"}',  # 2
        b"{not json",  # 3
        b"[" * 10_000 + b"]" * 10_000,  # 4
        line("add", conversation_id="c", role="robot", content="x").encode(),  # 5
        line("frobnicate", message_id="m1").encode(),  # 6
        line("add", conversation_id="c", role="user", content="x" * 4_000_001).encode(),  # 7
        line("update_content", message_id="missing", content="x").encode(),  # 8
        line("add", conversation_id="c", role="user", content="again", message_id="m1").encode(),
        line("add", conversation_id="c", role="user", content="\ud800").encode(),  # 10
        b"",  # 11: blank, skipped
        line("update", message_id="m1", metadata={"seen": True}).encode(),  # 12
        LAST.encode(),  # 13
    ]
    path = tmp_path / "ops.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def refused(stderr: bytes) -> dict[int, str]:
    found = {}
    for text in stderr.decode().splitlines():
        number, _, reason = text.removeprefix("line ").partition(": ")
        found[int(number)] = reason
    return found


def test_atomic_and_plain_runs_refuse_the_same_lines(tmp_path: Path) -> None:
    ops = bad_lines_of_every_kind(tmp_path)
    (tmp_path / "plain").mkdir()
    (tmp_path / "atomic").mkdir()
    plain = ingest_bytes(tmp_path / "plain", b"", str(ops))
    atomic = ingest_bytes(tmp_path / "atomic", b"", "--atomic", str(ops))
    assert plain.returncode == atomic.returncode == 1
    assert sorted(refused(plain.stderr)) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert refused(atomic.stderr) == refused(plain.stderr)
    assert refused(atomic.stderr)[7].startswith("content: 4,000,003 bytes as JSON, over the limit")
    assert refused(atomic.stderr)[8] == "message_id: no message with id 'missing'"
    assert "already exists" in refused(atomic.stderr)[9]
    assert b"applied 3, invalid 9" in plain.stdout
    assert b"applied 0, invalid 9 (--atomic: nothing applied)" in atomic.stdout
    assert stored(tmp_path / "plain" / "anchorline.db") == ["before", "after"]
    assert stored(tmp_path / "atomic" / "anchorline.db") == []
    # The good lines alone apply together, and reach the index like any write.
    good = b"\n".join(ops.read_bytes().splitlines()[i] for i in (0, 11, 12))
    result = run(tmp_path / "atomic", "ingest", "--atomic", "-", stdin=good.decode())
    assert result.returncode == 0, result.stderr
    assert "applied 3, invalid 0" in result.stdout
    found = run(tmp_path / "atomic", "search", "after", "--limit", "1")
    assert found.returncode == 0 and "after" in found.stdout


def test_a_store_failure_stops_the_run_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = Pipeline.persist
    calls = 0

    def full_at_the_second(self: Pipeline, op: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise apsw.FullError("database or disk is full")  # an injected fault
        return real(self, op, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Pipeline, "persist", full_at_the_second)
    ops = tmp_path / "ops.jsonl"
    ops.write_text("\n".join([GOOD, LAST, LAST]) + "\n")
    db = str(tmp_path / "a.db")
    assert main(["--db", db, "--index", "none", "ingest", str(ops)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "anchorline: error: stopped at line 2: database or disk is full"
        " (the 1 applied before it stay)\n"
    )
    monkeypatch.undo()
    assert stored(Path(db)) == ["before"]


def test_ingest_from_a_closed_standard_input_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of a closed descriptor 0
    assert main(["--db", ":memory:", "--index", "none", "ingest", "-"]) == 1
    assert capsys.readouterr().err == (
        "anchorline: error: ingest -: standard input is closed; give a FILE instead\n"
    )
