"""Fixtures for test suites that use Anchorline (registered as a ``pytest11`` entry point).

``anchorline_pipeline`` runs on :class:`~anchorline.plugins.in_memory.InMemoryTerminal`
and touches no file; ``anchorline_sqlite_pipeline`` runs on a real SQLite file
under ``tmp_path``. Entry-point plugins are not loaded, so a suite is not
affected by whatever else is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline.plugins.in_memory import InMemoryTerminal
from anchorline.runner import Pipeline


@pytest.fixture
def anchorline_pipeline() -> Iterator[Pipeline]:
    """A pipeline whose terminal is an in-memory double."""
    with Pipeline.open(":memory:", terminal=InMemoryTerminal(), load_entrypoints=False) as pipeline:
        yield pipeline


@pytest.fixture
def anchorline_sqlite_pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline on a fresh SQLite file in ``tmp_path``."""
    with Pipeline.open(str(tmp_path / "anchorline.db"), load_entrypoints=False) as pipeline:
        yield pipeline
