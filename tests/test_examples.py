"""The runnable examples in docs/ run."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_a_redirecting_plugin_can_index_its_own_writes(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "redirect_with_index.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert (
        "ephemeral:1: haiku on autumn leaves" in lines[0]
    )  # the redirected message is found first


def test_the_minilm_example_defines_an_embedder_plugin() -> None:
    # Running it needs torch and the model package (docs/embedders.md); here we
    # check that it is importable and answers the embedder hook by name.
    namespace = runpy.run_path(str(EXAMPLES / "minilm_embedder.py"))
    plugin = namespace["plugin"]
    assert hasattr(plugin.embedder, "anchorline_impl")
    assert namespace["MiniLMEmbedder"].dimension == 384
