"""docs/architecture.md's module tables name what the tree holds: every module and
folder of ``memory/`` and of the CLI package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _table_after(heading: str) -> str:
    start = DOC.index(heading)
    lines = DOC[start:].splitlines()[1:]
    rows = []
    for line in lines:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return "\n".join(rows)


def _named(table: str) -> set[str]:
    """The modules and folders a table's first column names (``a.py``, ``b/``)."""
    first = [row.split("|")[1] for row in table.splitlines()[2:]]
    return {name for cell in first for name in re.findall(r"`([\w]+(?:\.py|/))`", cell)}


def _tree(folder: Path) -> set[str]:
    return {
        path.name + ("/" if path.is_dir() else "")
        for path in folder.iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").exists())
    }


def test_the_memory_table_names_every_module_and_folder_of_memory() -> None:
    assert _named(_table_after("`memory/` holds:")) == _tree(ROOT / "memory")


def test_the_cli_table_names_every_module_of_the_cli_package() -> None:
    named = _named(_table_after("The command line, `pipeline/cli/`"))
    assert named == _tree(ROOT / "pipeline" / "cli") - {"__main__.py"}


def test_every_file_the_walk_of_an_add_names_exists_and_sqlites_walk_takes_eight() -> None:
    walk = DOC[DOC.index("## 1. The op") : DOC.index("## 6. The same Add on PostgreSQL")]
    headings = re.findall(r"^## \d\. .*$", walk, flags=re.MULTILINE)
    files = {
        f
        for heading in headings
        for f in re.findall(r"`((?:pipeline|plugins|memory)/[\w/]+\.py)`", heading)
    }
    assert all((ROOT / f).exists() for f in files), files
    assert len(files) == 8, sorted(files)
