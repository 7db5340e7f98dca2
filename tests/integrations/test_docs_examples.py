"""docs/integrations.md: its examples run, in order, and print what their comments say."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[2] / "docs" / "integrations.md"


def test_the_integrations_md_examples_run_and_print_what_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The page brings everything it uses, its model and its client included: it runs
    # offline as a reader copies it, with no name handed in.
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) >= 4
    expected = [
        comment.split(":")[0].strip()
        for block in blocks
        for comment in re.findall(r"^\s*print\(.*\)  # (.*)$", block, re.M)
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), caplog.at_level(logging.WARNING):
        for block in blocks:
            exec(compile(block, str(PAGE), "exec", dont_inherit=True), namespace)
    assert out.getvalue().splitlines() == expected
    assert [r.getMessage() for r in caplog.records] == []  # no trace export tried, say
