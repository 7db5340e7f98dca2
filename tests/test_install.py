"""Installed, Anchorline is one import name: a user's own modules cannot shadow it, and a
user's type checker sees it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("ANCHORLINE_DB", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_the_wheel_holds_one_top_level_name(tmp_path: Path) -> None:
    built = run(
        ROOT, sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("anchorline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "anchorline",
        f"anchorline-{version('anchorline')}.dist-info",
    }
    for typed in (
        "anchorline/py.typed",
        "anchorline/plugins/py.typed",
        "anchorline/memory/py.typed",
    ):
        assert typed in names
    assert "anchorline/bench/__init__.py" in names
    assert "anchorline/memory/sqlite/store.py" in names


def test_a_users_memory_plugins_and_pipeline_modules_do_not_shadow_anchorline(
    tmp_path: Path,
) -> None:
    # What an agent project often has in its working directory.
    (tmp_path / "memory.py").write_text("FACTS: list[str] = []\n")
    (tmp_path / "pipeline.py").write_text("def run() -> None: ...\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text("ENABLED = ['search']\n")
    script = (
        "from anchorline import Add, Pipeline\n"
        "import anchorline.memory, anchorline.plugins\n"
        "with Pipeline.open('chat.db') as p:\n"
        "    p.persist(Add(conversation_id='c', role='user', content='hi'))\n"
        "    print(p.messages('c')[0].content)\n"
    )
    imported = run(tmp_path, sys.executable, "-c", script)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == "hi\n"

    as_module = run(
        tmp_path, sys.executable, "-m", "anchorline.cli", "--db", "chat.db", "show", "c"
    )
    assert as_module.returncode == 0, as_module.stderr
    assert "hi" in as_module.stdout

    console_script = Path(sys.executable).parent / "anchorline"
    by_script = run(tmp_path, str(console_script), "--db", "chat.db", "show", "c")
    assert by_script.returncode == 0, by_script.stderr
    assert "hi" in by_script.stdout


def test_a_users_type_checker_sees_anchorline_and_its_typed_hookimpl(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(
        textwrap.dedent(
            """
            from anchorline import Add, Pipeline, PersistOp, PersistResult, hookimpl
            from anchorline import Context

            class Audit:
                @hookimpl
                def after_persist(
                    self, op: PersistOp, result: PersistResult, context: Context
                ) -> None:
                    print(op.kind)

            def main() -> None:
                with Pipeline.open("chat.db", plugins=[Audit()]) as pipeline:
                    added = pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
                    wrong: int = added.message.id

            reveal_type(hookimpl)
            """
        )
    )
    checked = run(
        tmp_path,
        sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", os.devnull,
        "agent.py",
    )  # fmt: skip
    out = checked.stdout
    assert "Cannot find implementation or library stub" not in out, out
    assert 'Revealed type is "pluggy.' in out and '.HookimplMarker"' in out, out
    # Only the deliberate mistake: Message.id is a str, seen through the installed types.
    assert 'agent.py:15: error: Incompatible types in assignment (expression has type "str"' in out
    assert "Found 1 error in 1 file" in out, out
