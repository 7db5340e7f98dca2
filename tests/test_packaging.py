"""What a non-editable install ships: every package folder, under one import name."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The repository's folders and the import names they install as.
FOLDERS = {"pipeline": "anchorline", "plugins": "anchorline.plugins", "memory": "anchorline.memory"}


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
