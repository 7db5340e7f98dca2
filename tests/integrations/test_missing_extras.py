"""An integration imported without its extra says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

_IMPORT_WITHOUT = """
import sys
sys.modules[{package!r}] = None  # as if the package were not installed
try:
    import anchorline.integrations.{module}
except ImportError as e:
    print(type(e).__name__, e.name, str(e), sep="|")
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("openai_agents", "agents", "openai-agents"),
        ("pydantic_ai", "pydantic_ai", "pydantic-ai"),
    ],
)
def test_importing_an_integration_without_its_extra_names_the_extra(
    module: str, package: str, extra: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT.format(package=package, module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kind, name, message = done.stdout.strip().split("|")
    assert kind == "ModuleNotFoundError" and name == package
    assert f"anchorline.integrations.{module} needs" in message
    assert f"pip install 'anchorline[{extra}]'" in message
