"""Third-party plugins arrive through the ``anchorline`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import Add, Pipeline, PluginError

from .test_cli import run


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


def install_broken(site: Path, entry_point: str) -> None:
    """The distribution ``revplug 1.0`` with a working plugin, ``revplug.good``, and the
    ``anchorline`` entry point ``entry_point``; ``revplug.raising`` fails at import."""
    package = site / "revplug"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text(
        "from anchorline import hookimpl\n\n@hookimpl\ndef pipeline_opened(context):\n    pass\n"
    )
    (package / "raising.py").write_text("raise RuntimeError('no licence key\\nset one')\n")
    dist = site / "revplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: revplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[anchorline]\nrevgood = revplug.good\n{entry_point}\n")


BROKEN = [
    (
        "revmissing = revplug.nonexistent",
        "ModuleNotFoundError: No module named 'revplug.nonexistent'",
    ),
    ("revraising = revplug.raising", "RuntimeError: no licence key set one"),
]


@pytest.fixture
def forget_revplug() -> Iterator[None]:
    yield
    for name in [m for m in sys.modules if m == "revplug" or m.startswith("revplug.")]:
        del sys.modules[name]


@pytest.mark.parametrize(("entry_point", "error"), BROKEN, ids=["missing", "raising"])
def test_an_entry_point_that_fails_to_load_is_named_with_its_distribution(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forget_revplug: None,
    entry_point: str,
    error: str,
) -> None:
    install_broken(tmp_path, entry_point)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD")
    with pytest.raises(PluginError) as info:
        Pipeline.open(str(tmp_path / "chat.db"))
    message = str(info.value)
    name = entry_point.partition(" = ")[0]
    assert message.startswith(f"entry point {name!r} ({entry_point}, group 'anchorline')")
    assert "of revplug 1.0 failed to load: " + error in message
    assert "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD=1 to start without entry-point plugins" in message
    assert "\n" not in message
    monkeypatch.setenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD", "1")
    Pipeline.open(str(tmp_path / "chat.db")).close()


@pytest.mark.parametrize(("entry_point", "error"), BROKEN, ids=["missing", "raising"])
def test_the_cli_names_a_broken_entry_point_in_one_line(
    tmp_path: Path, entry_point: str, error: str
) -> None:
    site = tmp_path / "site"
    install_broken(site, entry_point)
    autoload = {"PYTHONPATH": str(site), "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "0"}
    result = run(tmp_path, "ingest", "-", stdin="", env=autoload)
    assert result.returncode == 1
    name = entry_point.partition(" = ")[0]
    assert result.stderr.startswith(f"anchorline: error: entry point {name!r} ({entry_point},")
    assert error in result.stderr and "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD=1" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no database created
    skipped = run(tmp_path, "ingest", "-", stdin="", env={"PYTHONPATH": str(site)})
    assert skipped.returncode == 0, skipped.stderr
