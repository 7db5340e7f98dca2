"""The docs keep up with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from anchorline import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "anchorline_spec")
)


def test_there_are_hooks_to_check() -> None:
    assert {"persist", "after_persist", "get_message", "list_messages"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_an_example(hook: str) -> None:
    text = (ROOT / "docs" / "hooks.md").read_text()
    section = re.search(rf"### `{hook}`\n(.*?)(?=\n##|\Z)", text, re.S)
    assert section, f"docs/hooks.md has no section for {hook}"
    assert "```python" in section.group(1), f"the {hook} section has no example"
    assert f"def {hook}(" in section.group(1)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_docstring_with_its_params(hook: str) -> None:
    fn = getattr(hookspecs, hook)
    doc = fn.__doc__ or ""
    for param in fn.__code__.co_varnames[: fn.__code__.co_argcount]:
        assert f":param {param}:" in doc, f"{hook} does not document {param}"
    if fn.anchorline_spec["firstresult"]:
        assert doc.rstrip().endswith("Stops at the first non-None result."), hook


@pytest.mark.parametrize("which", ["demo", "test"])
def test_ci_runs_the_readme_commands(which: str) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(rf"<!-- {which} command -->\n```sh\n(.+)\n```", readme)
    assert command, f"README.md has no {which} command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"readme_command {which}" in ci
    assert "set -euo pipefail" in ci


def test_reliability_md_names_tests_that_exist() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`((?:faults/)?test_\w+\.py)(?:::(test_\w+))?`", text))
    assert len(named) > 20
    for module, test in named:
        source = (ROOT / "tests" / module).read_text()
        if test:
            assert f"def {test}(" in source, (
                f"{module}::{test} is named in reliability.md but missing"
            )


@pytest.mark.parametrize("page", ["README.md", "docs/agent-loop.md"])
def test_the_python_examples_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
    pipeline = namespace["pipeline"]
    pipeline.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook: str) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    assert f"def {hook}(" in sources, f"no test implements the {hook} hook"
