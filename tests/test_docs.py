"""The docs keep up with the code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from jsonschema import Draft202012Validator

from anchorline import Add, Pipeline, SweepReport, hookspecs, parse_op
from anchorline.op_schema import shipped_op_schema
from anchorline.ops import OP_TYPES

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "anchorline_spec")
)


def fenced(page: str, language: str) -> list[str]:
    """The code blocks of ``page`` in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / page).read_text(), re.S)


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
    named = set(re.findall(r"`((?:faults/|contract/)?test_\w+\.py)(?:::(test_\w+))?`", text))
    assert len(named) > 20
    for module, test in named:
        source = (ROOT / "tests" / module).read_text()
        if test:
            assert f"def {test}(" in source, (
                f"{module}::{test} is named in reliability.md but missing"
            )


@pytest.mark.parametrize("page", ["README.md", "docs/agent-loop.md", "docs/conversation-log.md"])
def test_the_python_examples_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, page, "exec", dont_inherit=True), namespace)
    pipeline = namespace["pipeline"]
    pipeline.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_that_implements_it(hook: str) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    assert f"def {hook}(" in sources, f"no test implements the {hook} hook"


# --- docs/hooks.md: every example runs ------------------------------------------

EXCERPT = re.compile(r"# (docs/examples/\w+\.py) \(excerpt\)\n")


def test_the_hooks_md_examples_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    blocks = fenced("docs/hooks.md", "python")
    for block in blocks:
        exec(compile(block, "docs/hooks.md", "exec", dont_inherit=True), namespace)
    excerpts = [block for block in blocks if EXCERPT.match(block)]
    assert len(blocks) >= 12 and len(excerpts) >= 4
    # An excerpt of docs/examples/ runs on its own too, after the page's imports, as a
    # reader pastes it: it defines the part of the class it shows.
    for excerpt in excerpts:
        alone: dict[str, Any] = {}
        exec(compile(blocks[0], "docs/hooks.md", "exec", dont_inherit=True), alone)
        exec(compile(excerpt, "docs/hooks.md", "exec", dont_inherit=True), alone)
        shown = re.findall(r"^    def (\w+)\(", excerpt, re.M)
        assert shown and all(name in vars(alone["Archive"]) for name in shown)
    assert "add took" in capsys.readouterr().out
    # The pipeline_closing example ends with its plugin: use it as its section says.
    with Pipeline.open(":memory:", plugins=[namespace["Flusher"]()]) as pipeline:
        pipeline.persist(Add(conversation_id="c1", role="user", content="Hi"))
        assert not (tmp_path / "writes.log").exists()
    assert (tmp_path / "writes.log").read_text() == "add\n"


def test_the_hooks_md_excerpts_are_verbatim_from_their_example_file() -> None:
    excerpts = 0
    for block in fenced("docs/hooks.md", "python"):
        if match := EXCERPT.match(block):
            source = (ROOT / match.group(1)).read_text()
            for chunk in re.split(r"\n *\.\.\.\n", block[match.end() :]):
                assert chunk.strip("\n") in source, f"not in {match.group(1)}:\n{chunk}"
            excerpts += 1
    assert excerpts >= 4


def test_hooks_md_says_a_redirecting_plugin_must_answer_the_read_hooks() -> None:
    text = (ROOT / "docs" / "hooks.md").read_text()
    warning = re.search(r"> \*\*A plugin that answers writes must also answer.*?\n\n", text, re.S)
    assert warning, "hooks.md has no callout for redirecting plugins"
    for hook in ("get_message", "list_messages", "list_reserved"):
        assert hook in warning.group(0)
    assert "examples/archive_plugin.py" in text


NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@pytest.mark.parametrize("page", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md")))
def test_a_page_that_counts_the_kinds_of_op_counts_them_all(page: str) -> None:
    prose = re.sub(r"```.*?```", "", (ROOT / page).read_text(), flags=re.S)
    text = " ".join(prose.split())
    counts = re.findall(rf"\b(?:the|all) ({'|'.join(NUMBERS)}) (?:kinds|ops)\b", text)
    assert all(NUMBERS.index(n) + 2 == len(OP_TYPES) for n in counts), (page, counts)


def test_the_docs_spell_finalized_as_the_sweep_report_does() -> None:
    assert "finalized" in {a.name for a in attrs.fields(SweepReport)}
    for page in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        assert "finalis" not in page.read_text(), page.name


def test_agent_loop_md_says_what_a_sweep_report_holds() -> None:
    text = " ".join((ROOT / "docs" / "agent-loop.md").read_text().split())
    assert "`deleted`, `finalized` and `skipped` are tuples of message ids" in text


# --- docs/ops-format.md: every kind, every field, examples that parse -------------

OPS_FORMAT = "docs/ops-format.md"


def kind_section(kind: str) -> str:
    text = (ROOT / OPS_FORMAT).read_text()
    section = re.search(rf"### `{kind}`\n(.*?)(?=\n#|\Z)", text, re.S)
    assert section, f"{OPS_FORMAT} has no section for {kind}"
    return section.group(1)


@pytest.mark.parametrize("op_type", OP_TYPES, ids=lambda t: t.kind)
def test_ops_format_md_has_a_row_for_every_field_of_every_kind(op_type: type) -> None:
    section = kind_section(op_type.kind)
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*)$", section, re.M))
    fields = [f for f in attrs.fields(op_type) if f.init]
    assert set(rows) == {"kind", *(f.name for f in fields)}, f"the {op_type.kind} table"
    schema = shipped_op_schema()["$defs"][op_type.kind]
    for field in fields:
        cells = [c.strip() for c in rows[field.name].split("|")]
        required = field.name in schema["required"]
        assert cells[1] == ("yes" if required else "no"), f"{op_type.kind}.{field.name}"
        default = "" if required else f"`{json.dumps(schema['properties'][field.name]['default'])}`"
        assert cells[2] == default, f"{op_type.kind}.{field.name} default"


@pytest.mark.parametrize("op_type", OP_TYPES, ids=lambda t: t.kind)
def test_ops_format_md_example_lines_are_valid_ops_of_their_kind(op_type: type) -> None:
    [example] = re.findall(r"```jsonl\n(.*?)```", kind_section(op_type.kind), re.S)
    validator = Draft202012Validator(shipped_op_schema())
    for line in example.splitlines():
        data = json.loads(line)
        validator.validate(data)
        assert type(parse_op(data)) is op_type


def test_ops_format_md_ingest_example_prints_what_the_page_says(tmp_path: Path) -> None:
    text = (ROOT / OPS_FORMAT).read_text()
    example = text[text.index("## `anchorline ingest`") :]
    lines = re.search(r"```jsonl\n(.*?)```", example, re.S)
    command = re.search(r"```sh\nanchorline (.*?)\n```", example, re.S)
    printed = re.search(r"prints, and exits (\d):\n\n```text\n(.*?)```", example, re.S)
    assert lines and command and printed
    (tmp_path / "ops.jsonl").write_text(lines.group(1))
    result = subprocess.run(
        [sys.executable, "-m", "anchorline.cli", *command.group(1).split()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ANCHORLINE_")},
            "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1",
        },
    )
    assert result.stderr + result.stdout == printed.group(2)
    assert result.returncode == int(printed.group(1))


def test_ops_format_md_python_examples_run() -> None:
    blocks = fenced(OPS_FORMAT, "python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, OPS_FORMAT, "exec", dont_inherit=True), {})


# --- docs/indexing.md: what the default embedder finds ---------------------------


def test_indexing_md_gives_the_scores_the_default_embedder_gives() -> None:
    text = (ROOT / "docs" / "indexing.md").read_text()
    section = re.search(r"## What search finds\n(.*?)(?=\n## )", text, re.S)
    assert section, "indexing.md does not say what search finds"
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \| (-?\d\.\d\d) \|$", section.group(1), re.M)
    assert len(rows) >= 5
    messages = sorted({message for _, message, _ in rows})
    with Pipeline.open(":memory:", index=":memory:", index_sync=True) as pipeline:
        assert pipeline.indexer().embedder.name.startswith("hashing")  # type: ignore[union-attr]
        for message in messages:
            pipeline.persist(Add(conversation_id="c1", role="user", content=message))
        for query, message, score in rows:
            hits = pipeline.search(query, limit=len(messages))
            scores = {hit.message.content: hit.score for hit in hits}
            assert round(scores[message], 2) == float(score), (query, message)
