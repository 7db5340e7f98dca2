"""Stored or typed text never drives the terminal: its control characters are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_cli import line, run

CLEAR = "\x1b[2J"
HYPERLINK = "\x1b]8;;https://example.com\x1b\\click\x1b]8;;\x1b\\"
COLOUR = "\x1b[31mred\x1b[0m"
C1_CSI = "\x9b2J"
TITLE = "\x1b]0;owned\x07"
HOSTILE = f"lisbon {CLEAR} {HYPERLINK} {COLOUR} {C1_CSI} {TITLE} \r\x08 \u202eevil"


def assert_inert(text: str) -> None:
    """Nothing in ``text`` that a terminal acts on: no C0 control but newline, no C1, no
    DEL, no bidi override."""
    for char in text:
        assert char == "\n" or not (ord(char) < 32 or 0x7F <= ord(char) <= 0x9F), repr(char)
        assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", repr(char)


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    ops = [
        line("add", conversation_id="c1", role="user", content=HOSTILE, message_id=f"m{TITLE}"),
        line(
            "add",
            conversation_id="c1",
            role="assistant",
            content=[{"type": "text", "text": f"answer {COLOUR}"}],
        ),
    ]
    added = run(tmp_path, "ingest", "-", stdin="\n".join(ops))
    assert added.returncode == 0, added.stderr
    return tmp_path


def test_show_and_search_print_control_characters_as_escapes(hostile: Path) -> None:
    shown = run(hostile, "show", "c1")
    assert shown.returncode == 0, shown.stderr
    assert_inert(shown.stdout)
    assert "lisbon \\x1b[2J \\x1b]8;;https://example.com\\x1b\\click" in shown.stdout
    assert "\\x9b2J" in shown.stdout and "\\x1b]0;owned\\x07" in shown.stdout
    assert "\\r\\x08" in shown.stdout and "\\u202eevil" in shown.stdout
    assert "answer \\x1b[31mred\\x1b[0m" in shown.stdout
    as_json = run(hostile, "show", "c1", "--json")
    assert_inert(as_json.stdout)
    assert json.loads(as_json.stdout.splitlines()[0])["content"] == HOSTILE  # exact, escaped
    found = run(hostile, "search", "lisbon")
    assert found.returncode == 0, found.stderr
    assert_inert(found.stdout)
    assert "\\x1b[2J" in found.stdout and "m\\x1b]0;owned\\x07" in found.stdout


def test_an_error_naming_a_hostile_path_or_id_does_not_reach_the_terminal(
    tmp_path: Path,
) -> None:
    results = [
        run(tmp_path, "--db", f"x/{TITLE}.db", "show", "c1"),
        run(tmp_path, "--db", f"{TITLE}.db", "show", f"c{CLEAR}"),
        run(tmp_path, f"--{TITLE}", "show", "c1"),
        run(tmp_path, "copy", f"{TITLE}.db", "b.db"),
        run(
            tmp_path,
            "ingest",
            "-",
            stdin=line("add", conversation_id="c", role=f"r{COLOUR}", content="x"),
        ),
    ]
    for result in results:
        assert result.returncode != 0
        assert_inert(result.stderr)
        assert "\\x1b]0;owned\\x07" in result.stderr or "\\x1b[31m" in result.stderr, result.stderr


def test_on_a_terminal_the_table_shows_the_escapes_too(hostile: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    environment = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200",
                   "TERM": "xterm-256color"}  # fmt: skip
    shown = subprocess.run([sys.executable, "-m", "anchorline.cli", "show", "c1"], cwd=hostile,
                           stdout=child, stderr=subprocess.PIPE, env=environment, timeout=60,
                           check=False)  # fmt: skip
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other end is closed: all read
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    assert shown.returncode == 0, shown.stderr
    text = screen.decode()
    assert "┃" in text or "│" in text  # a table, on a terminal
    for raw in (CLEAR, "\x1b]8;;", "\x1b]0;", "\x9b", "\u202e", "\x1b[31mred"):
        assert raw not in text, repr(raw)
    assert "\\x1b[2J" in text and "\\x9b2J" in text
