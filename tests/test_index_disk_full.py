"""A disk that fills under the embedded index: indexing waits, the process lives on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

#: An agent indexing into a folder on the small disk, its database elsewhere.
#: MIN_FREE_BYTES = 0 stands for a disk that another process fills after the free-space
#: check: the write itself then finds it full, which is what killed the process (SIGBUS).
AGENT = textwrap.dedent(
    """
    import sys
    import anchorline.memory.index.edge_index as edge_index
    from anchorline import Add, Pipeline

    edge_index.MIN_FREE_BYTES = 0
    db, folder = sys.argv[1:3]
    with Pipeline.open(db, index=folder, index_sync=True, load_entrypoints=False) as pipeline:
        for i in range(30):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"before {i} disk"))
        print("indexed", pipeline.index_status().pending, flush=True)
        sys.stdin.readline()  # the disk is filled meanwhile
        for i in range(30):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"full {i} disk"))
        status = pipeline.index_status()
        print("waiting", status.pending, status.last_error, flush=True)
        sys.stdin.readline()  # the disk has room again
        pipeline.flush_index(timeout=60)
        print("found", len(pipeline.search("disk", limit=100)), flush=True)
    """
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs of its own (mounting needs root, as in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> None:
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_disk_filled_under_the_index_holds_indexing_back_and_the_agent_lives(
    tmp_path: Path, small_disk: Path
) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path / "chat.db"), str(small_disk / "index")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdin is not None and agent.stdout is not None
        assert agent.stdout.readline().split() == ["indexed", "0"]
        fill(small_disk / "filler")  # another process takes the rest of the disk
        agent.stdin.write("go\n")
        agent.stdin.flush()
        line = agent.stdout.readline()
        assert line, f"the agent died: return code {agent.wait(timeout=10)}"  # -7: SIGBUS
        assert line.startswith("waiting 30 "), line  # acknowledged, and queued to index
        assert "its disk is full" in line, line
        (small_disk / "filler").unlink()
        agent.stdin.write("go\n")
        agent.stdin.flush()
        out, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    assert agent.returncode == 0, err
    assert out.split() == ["found", "60"]  # every acknowledged message, indexed
    assert os.listdir(small_disk) == ["index"]
