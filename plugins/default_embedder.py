"""The default ``embedder``: offline feature hashing (``HashingEmbedder``)."""

from __future__ import annotations

from anchorline.context import Context
from anchorline.embedding import Embedder
from anchorline.hookspecs import hookimpl
from anchorline.memory.embedders import HashingEmbedder
from anchorline.settings import Settings


class DefaultEmbedder:
    """Answers the ``embedder`` hook, last, with the offline hashing embedder."""

    def __repr__(self) -> str:
        return "DefaultEmbedder(HashingEmbedder)"

    @hookimpl(trylast=True)
    def embedder(self, context: Context) -> Embedder:
        return HashingEmbedder()


def create(settings: Settings) -> DefaultEmbedder | None:
    return DefaultEmbedder() if settings.index is not None else None
