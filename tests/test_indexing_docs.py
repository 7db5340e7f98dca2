"""docs/indexing.md: its opening example runs on its own, imports included."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "indexing.md"


def test_the_first_indexing_md_example_runs_in_a_fresh_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(first, str(PAGE), "exec"), namespace)
    assert namespace["hits"][0].message.content == "My flight leaves at 7."
    namespace["pipeline"].close()
