"""What a non-editable install ships: every package folder, and the typing marker."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_for_setuptools() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("pipeline", "plugins", "memory")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    for top in ("pipeline", "plugins", "memory"):
        assert (ROOT / top / "py.typed").exists()
        assert config["package-data"][top] == ["py.typed"]
