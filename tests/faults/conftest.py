"""Helpers of the fault suite, and the figures it measured, printed at the end of the run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from anchorline import Pipeline

from ..support.fault_vfs import FaultVFS

FIGURES: list[str] = []


def knob(name: str, default: int) -> int:
    """A size of the fault suite, set by ``ANCHORLINE_<NAME>`` to run it bigger locally."""
    return int(os.environ.get(f"ANCHORLINE_{name}", default))


@pytest.fixture
def figures() -> Iterator[list[str]]:
    yield FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


# --- no hangs ------------------------------------------------------------------------


def finishes(call: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``call()`` run in a thread of its own, failing the test if it has not returned
    after ``timeout`` seconds: a regression that blocks a thread fails the suite
    instead of hanging it. Returns what ``call`` returned and raises what it raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"bounded: {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {timeout:g}s: a thread is blocked")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def close_within(pipeline: Pipeline, timeout: float = 60.0) -> None:
    """Close ``pipeline``, failing the test if ``close()`` hangs."""
    finishes(pipeline.close, "Pipeline.close()", timeout)


# --- a full disk ---------------------------------------------------------------------


@attrs.define
class FullDisk:
    """A folder on a disk that fills up: a real tmpfs when it can be mounted, else
    a VFS shim that answers ``SQLITE_FULL`` (pass ``vfs`` to ``Pipeline.open``)."""

    folder: Path
    kind: str
    vfs: str | None
    _shim: FaultVFS | None = None
    _ballast: Path | None = None

    def free(self) -> None:
        """Make room again, as a user deleting other files would."""
        if self._ballast is not None:
            self._ballast.unlink()
        if self._shim is not None:
            self._shim.space = None


def _mount_tmpfs(folder: Path, megabytes: int) -> bool:
    if os.geteuid() != 0:
        return False
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return mounted.returncode == 0


@contextlib.contextmanager
def full_disk(folder: Path, *, real: bool = True, megabytes: int = 3) -> Iterator[FullDisk]:
    """A :class:`FullDisk` at ``folder`` with about half of ``megabytes`` left for the database."""
    folder.mkdir()
    ballast_size = megabytes * 1024 * 1024 // 2
    if real and _mount_tmpfs(folder, megabytes):
        ballast = folder / "ballast"
        ballast.write_bytes(b"\0" * ballast_size)
        try:
            yield FullDisk(folder, f"a real {megabytes} MB tmpfs", None, ballast=ballast)
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    shim = FaultVFS("anchorline-full-disk")
    shim.space = megabytes * 1024 * 1024 - ballast_size
    why = "asked for" if not real else "tmpfs could not be mounted"
    try:
        yield FullDisk(folder, f"an apsw VFS answering SQLITE_FULL ({why})", shim.name, shim=shim)
    finally:
        shim.unregister()
