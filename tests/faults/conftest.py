"""Figures the fault suite measured, printed at the end of the run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
