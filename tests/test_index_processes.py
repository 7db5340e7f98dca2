"""Processes sharing one embedded index folder: the one holding it answers the others' reads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

#: An agent writing one message every 50 ms, each with a word of its own; it prints the
#: word and the message id once the write is acknowledged.
WRITER = textwrap.dedent(
    """
    import string, sys, time
    from anchorline import Add, Pipeline

    def word(i):
        letters = ""
        for _ in range(6):
            i, r = divmod(i * 7 + 3, 26)
            letters += string.ascii_lowercase[r]
        return "lisbon" + letters

    with Pipeline.open(sys.argv[1], index="local", load_entrypoints=False) as pipeline:
        for i in range(10_000):
            w = word(i)
            added = pipeline.persist(Add(conversation_id="trip", role="user", content=f"note {w}"))
            print(w, added.message.id, flush=True)
            time.sleep(0.05)
    """
)


def anchorline(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "anchorline.cli", "--db", str(db), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=20,  # far below the 30 s a search used to wait for the folder
    )


def test_search_and_doctor_answer_while_an_agent_writes_and_holds_the_folder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[tuple[float, str, str]] = []  # (when, word, message id)

    def read() -> None:
        assert writer.stdout is not None
        for line in writer.stdout:
            word, message_id = line.split()
            acknowledged.append((time.monotonic(), word, message_id))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while len(acknowledged) < 20:  # the agent is writing, and holds the folder
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            time.sleep(0.05)
        searched = 0
        started = time.monotonic()
        while searched < 4 or time.monotonic() - started < 6:
            # What the agent wrote a second or more ago (indexed in the background meanwhile).
            _, word, message_id = [a for a in acknowledged if a[0] < time.monotonic() - 1.0][-1]
            found = anchorline(db, "search", word, "--limit", "1")
            assert found.returncode == 0, found.stderr
            assert message_id in found.stdout and word in found.stdout, found.stdout
            assert found.stderr == ""
            searched += 1
            # ...while the agent held the folder.
            lock = (tmp_path / "shared.db.index" / "anchorline.lock").read_text()
            assert f'"pid": {writer.pid}' in lock
        doctor = anchorline(db, "doctor")
        assert "points in the index" in doctor.stdout, doctor.stderr
        assert "held by" not in doctor.stderr
        # With --wait, what was written just before is waited for, then found.
        _, word, message_id = acknowledged[-1]
        waited = anchorline(db, "search", word, "--limit", "1", "--wait", "10")
        assert waited.returncode == 0 and waited.stderr == "", waited.stderr
        assert message_id in waited.stdout
        assert writer.poll() is None  # the agent wrote all along
    finally:
        writer.kill()
        writer.wait(timeout=10)
