"""Third-party plugins arrive through the ``anchorline`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import Add, Pipeline


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin installed the way pip would: a module and a dist-info with an entry point."""
    (tmp_path / "tagging_plugin.py").write_text(
        textwrap.dedent(
            """
            from anchorline import hookimpl

            seen = []

            @hookimpl
            def after_persist(op, result, context):
                seen.append(op.kind)
            """
        )
    )
    dist = tmp_path / "tagging_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tagging-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[anchorline]\ntagging = tagging_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("tagging_plugin", None)


def test_entry_point_plugins_load_by_default(
    installed_plugin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD")
    with Pipeline.open(":memory:") as pipeline:
        assert pipeline.plugin_manager.get_plugin("tagging") is not None
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    assert sys.modules["tagging_plugin"].seen == ["add"]


def test_load_entrypoints_false_skips_them(
    installed_plugin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD")
    with Pipeline.open(":memory:", load_entrypoints=False) as pipeline:
        assert pipeline.plugin_manager.get_plugin("tagging") is None


def test_the_environment_variable_skips_them(
    installed_plugin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD", "1")
    with Pipeline.open(":memory:") as pipeline:
        assert pipeline.plugin_manager.get_plugin("tagging") is None
