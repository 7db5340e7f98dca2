"""The default ``embedder``: the one ``$ANCHORLINE_EMBEDDER`` names, else offline
feature hashing (``HashingEmbedder``)."""

from __future__ import annotations

import os

from anchorline.context import Context
from anchorline.embedding import Embedder
from anchorline.hookspecs import hookimpl
from anchorline.memory.index.embedders import EMBEDDER_ENV, HashingEmbedder, embedder_from_spec
from anchorline.settings import Settings


class DefaultEmbedder:
    """Answers the ``embedder`` hook, last: ``$ANCHORLINE_EMBEDDER``'s embedder if set,
    else the offline hashing embedder."""

    def __repr__(self) -> str:
        spec = os.environ.get(EMBEDDER_ENV)
        return f"DefaultEmbedder({spec!r})" if spec else "DefaultEmbedder(HashingEmbedder)"

    @hookimpl(trylast=True)
    def embedder(self, context: Context) -> Embedder:
        spec = os.environ.get(EMBEDDER_ENV)
        return embedder_from_spec(spec) if spec else HashingEmbedder()


def create(settings: Settings) -> DefaultEmbedder | None:
    return DefaultEmbedder() if settings.index is not None else None
