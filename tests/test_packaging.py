"""What a non-editable install ships: every package folder, under one import name; and
which code may know which database it talks to."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The repository's folders and the import names they install as.
FOLDERS = {
    "pipeline": "anchorline",
    "plugins": "anchorline.plugins",
    "memory": "anchorline.memory",
    "benchmarks": "anchorline.bench",
}


def test_every_package_folder_is_listed_for_setuptools() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {name: folder for folder, name in FOLDERS.items()}
    found = {
        ".".join((FOLDERS[top], *init.parent.relative_to(ROOT / top).parts))
        for top in FOLDERS
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    assert all(name.split(".")[0] == "anchorline" for name in config["packages"])
    for top, name in FOLDERS.items():
        assert (ROOT / top / "py.typed").exists()
        assert "py.typed" in config["package-data"][name]


#: What only a store's own folder (and the bench's raw twins, in benchmarks/) may import.
STORE_ONLY = ("apsw", "anchorline.memory.sqlite")


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module a file imports, by line, with the dotted names it mentions as strings
    (``"module:attr"`` targets are imported by name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value.partition(":")[0]


def test_nothing_above_the_stores_imports_a_database_driver_or_a_store() -> None:
    files = [path for top in ("pipeline", "plugins") for path in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 20
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in _imported(ast.parse(path.read_text(), str(path)))
        if any(name == banned or name.startswith(banned + ".") for banned in STORE_ONLY)
    ]
    assert found == [], (
        "open stores with memory.stores.open_store, use them through memory.interface"
    )
