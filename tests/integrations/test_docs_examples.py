"""docs/integrations.md: its examples run, in order, and print what their comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from .test_openai_agents import COMPACTED, ScriptedModel, _FakeResponses, _say

PAGE = Path(__file__).parents[2] / "docs" / "integrations.md"


def test_the_integrations_md_examples_run_and_print_what_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) >= 4
    expected = [
        comment.split(":")[0].strip()
        for block in blocks
        for comment in re.findall(r"^\s*print\(.*\)  # (.*)$", block, re.M)
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")  # no trace export, no network
    model = ScriptedModel([[_say("San Francisco", 1)], [_say("California", 2)]])
    client = SimpleNamespace(responses=_FakeResponses(COMPACTED))
    namespace: dict[str, object] = {"model": model, "client": client}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), namespace)
    assert out.getvalue().splitlines() == expected
    assert len(model.inputs) == 2 and len(model.inputs[1]) == 3  # the second run saw the first
