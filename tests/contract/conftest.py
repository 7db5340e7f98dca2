"""The contract suite: each behaviour written once and run on every store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anchorline import Pipeline

from ..support.stores import TERMINALS, open_pipeline


@pytest.fixture(params=TERMINALS)
def pipeline(request: pytest.FixtureRequest, db_path: str) -> Iterator[Pipeline]:
    """One pipeline per store: a test that takes it runs on every store."""
    with open_pipeline(request.param, request, db_path) as opened:
        yield opened
