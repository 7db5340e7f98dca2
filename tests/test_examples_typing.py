"""The example programs in docs/examples pass mypy --strict, as a reader's code would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


def test_the_examples_pass_mypy_strict() -> None:
    examples = sorted(str(path) for path in EXAMPLES.glob("*.py"))
    assert examples
    done = subprocess.run(
        # Run from the project's root, so mypy's cache there makes reruns quick.
        [sys.executable, "-m", "mypy", "--strict", *examples],
        cwd=EXAMPLES.parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
