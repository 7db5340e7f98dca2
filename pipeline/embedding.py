"""What the index needs of an embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of a fixed ``dimension``.

    ``name`` identifies the model: the index keeps one collection per name and
    dimension, so switching models never mixes vectors of two models.
    """

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...
