"""The default embedder: offline signed feature hashing, no model to download."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from itertools import pairwise

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
        vector = [0.0] * self.dimension
        for feature, weight in self._features(text):
            h = zlib.crc32(feature.encode("utf-8", "surrogatepass"))
            vector[h % self.dimension] += weight if h & 0x80000000 else -weight
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector
