"""A faulty observer blocks nothing: the op succeeds and the index is still fed. (A failing
wrapper and a wrong answer, on every store: tests/contract/test_plugin_answers.py.)"""

from __future__ import annotations

import logging

import pytest

from anchorline import Add, Pipeline, hookimpl


def test_a_failing_observer_neither_fails_the_op_nor_starves_the_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Crashy:
        @hookimpl(tryfirst=True)
        def after_persist(self) -> None:
            raise ZeroDivisionError("observer bug")

    with (
        Pipeline.open(
            ":memory:",
            index=":memory:",
            index_sync=True,
            plugins=[Crashy()],
            load_entrypoints=False,
        ) as pipeline,
        caplog.at_level(logging.ERROR, logger="anchorline"),
    ):
        mid = pipeline.persist(
            Add(conversation_id="c", role="user", content="indexed anyway")
        ).message.id
        assert [h.message.id for h in pipeline.search("indexed anyway")] == [mid]
    assert "observer bug" in caplog.text
