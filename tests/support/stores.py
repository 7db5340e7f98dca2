"""A pipeline on each store the suite runs on: the in-memory double, a SQLite file, and
a PostgreSQL database. The contract suite (``tests/contract/``) and the adapters' suite
(``tests/integrations/``) parametrise their ``pipeline`` fixture over these."""

from __future__ import annotations

from typing import Any

import pytest

from anchorline import Pipeline
from anchorline.plugins.in_memory import InMemoryTerminal

#: Every store, by the name a test id shows.
TERMINALS = ("sqlite", "in_memory", "postgres")


def open_pipeline(
    kind: str, request: pytest.FixtureRequest, db_path: str, **options: Any
) -> Pipeline:
    """A pipeline on the store ``kind`` names, entry points off, opened with ``options``.

    SQLite writes the file ``db_path``; PostgreSQL asks ``request`` for the suite's
    server (the ``postgres_url`` fixture), so it starts only for tests that need it."""
    options.setdefault("load_entrypoints", False)
    if kind == "sqlite":
        return Pipeline.open(db_path, **options)
    if kind == "postgres":
        return Pipeline.open(request.getfixturevalue("postgres_url"), **options)
    if kind == "in_memory":
        return Pipeline.open(":memory:", terminal=InMemoryTerminal(), **options)
    raise ValueError(f"no store {kind!r}: the stores are {', '.join(TERMINALS)}")
