"""``durability`` sets how far a commit is synced: ``normal`` by default, ``full`` on request."""

from __future__ import annotations

import pytest

from anchorline import ConfigurationError, Pipeline
from anchorline.plugins.in_memory import InMemoryTerminal


def synchronous(pipeline: Pipeline) -> int:
    conn = pipeline.plugin_manager.get_plugin("terminal").store.conn
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


NORMAL, FULL = 1, 2


def test_full_durability_syncs_every_commit(db_path: str) -> None:
    with Pipeline.open(db_path, durability="full", load_entrypoints=False) as pipeline:
        assert synchronous(pipeline) == FULL
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        assert synchronous(pipeline) == NORMAL  # a setting of the connection, not of the file


def test_the_environment_sets_the_durability_and_the_argument_wins(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANCHORLINE_DURABILITY", "full")
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        assert synchronous(pipeline) == FULL
    with Pipeline.open(db_path, durability="normal", load_entrypoints=False) as pipeline:
        assert synchronous(pipeline) == NORMAL


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_an_unknown_durability_is_a_configuration_error_naming_it(
    db_path: str, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "environment":
        monkeypatch.setenv("ANCHORLINE_DURABILITY", "paranoid")
        kwargs = {}
    else:
        kwargs = {"durability": "paranoid"}
    with pytest.raises(ConfigurationError, match="'paranoid'") as info:
        Pipeline.open(db_path, load_entrypoints=False, **kwargs)
    assert ("ANCHORLINE_DURABILITY" in str(info.value)) == (where == "environment")
    assert "'normal' or 'full'" in str(info.value)
    # Refused with another terminal too: a typo is never silently ignored.
    with pytest.raises(ConfigurationError, match="'paranoid'"):
        Pipeline.open(":memory:", terminal=InMemoryTerminal(), load_entrypoints=False, **kwargs)
