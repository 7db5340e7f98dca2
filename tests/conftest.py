from __future__ import annotations

from pathlib import Path

import pytest

# A real PostgreSQL server, started by the suite itself (tests/support/postgres_server.py).
# The contract suite's ``pipeline``, one per store, is in tests/contract/conftest.py.
pytest_plugins = ["tests.support.postgres_server"]


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever else is installed must not change what the tests see.
    monkeypatch.setenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "test.db")
