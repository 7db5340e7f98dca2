"""The default ``embedder``: offline feature hashing (``memory.embedders.HashingEmbedder``)."""

from __future__ import annotations

from memory.embedders import HashingEmbedder
from pipeline.context import Context
from pipeline.embedding import Embedder
from pipeline.hookspecs import hookimpl
from pipeline.settings import Settings


class DefaultEmbedder:
    """Answers the ``embedder`` hook, last, with the offline hashing embedder."""

    def __repr__(self) -> str:
        return "DefaultEmbedder(HashingEmbedder)"

    @hookimpl(trylast=True)
    def embedder(self, context: Context) -> Embedder:
        return HashingEmbedder()


def create(settings: Settings) -> DefaultEmbedder | None:
    return DefaultEmbedder() if settings.index is not None else None
