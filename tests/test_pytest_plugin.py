"""The fixtures the ``pytest11`` entry point gives users' test suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchorline import Add, Pipeline, Reserve
from anchorline.plugins.in_memory import InMemoryTerminal

pytest_plugins = ["pytester"]


def test_anchorline_pipeline_is_in_memory(anchorline_pipeline: Pipeline) -> None:
    assert isinstance(anchorline_pipeline.plugin_manager.get_plugin("terminal"), InMemoryTerminal)
    mid = anchorline_pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    assert anchorline_pipeline.get(mid) is not None


def test_anchorline_sqlite_pipeline_writes_a_file_under_tmp_path(
    anchorline_sqlite_pipeline: Pipeline, tmp_path: Path
) -> None:
    anchorline_sqlite_pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    assert (tmp_path / "anchorline.db").exists()


def test_a_user_suite_gets_the_fixtures_without_configuration(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from anchorline import Add

        def test_uses_the_double(anchorline_pipeline):
            anchorline_pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
            assert len(anchorline_pipeline.messages("c")) == 1
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
