from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import Pipeline
from anchorline.plugins.in_memory import InMemoryTerminal

# A real PostgreSQL server, started by the suite itself (tests/support/postgres_server.py).
pytest_plugins = ["tests.support.postgres_server"]

#: The contract suite runs over every store: the in-memory double, a SQLite file,
#: and a PostgreSQL database.
TERMINALS = ("sqlite", "in_memory", "postgres")


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever else is installed must not change what the tests see.
    monkeypatch.setenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")


@pytest.fixture(params=TERMINALS)
def pipeline(request: pytest.FixtureRequest, db_path: str) -> Iterator[Pipeline]:
    """One pipeline per terminal: the contract tests run on both."""
    if request.param == "sqlite":
        opened = Pipeline.open(db_path, load_entrypoints=False)
    elif request.param == "postgres":
        opened = Pipeline.open(request.getfixturevalue("postgres_url"), load_entrypoints=False)
    else:
        opened = Pipeline.open(":memory:", terminal=InMemoryTerminal(), load_entrypoints=False)
    with opened:
        yield opened
