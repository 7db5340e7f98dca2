"""The default embedder: offline signed feature hashing, no model to download."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)
# Words so common they only add noise between unrelated texts.
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
        "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to",
        "was", "were", "will", "with", "you", "your", "we", "our",
    }
)  # fmt: skip

#: A word's features, hashed: (hashes, weights, its UTF-8 bytes, the CRC-32 of it and a
#: space, from which a pair's hash continues).
_Word = tuple[tuple[int, ...], tuple[float, ...], bytes, int]


class HashingEmbedder:
    """Signed feature hashing of words, word pairs and character trigrams, L2-normalised.

    Texts that share words get similar vectors, which is enough for lexical
    recall with no model and no network. It knows nothing of meaning:
    "car" and "automobile" are unrelated to it. Plug in a sentence-embedding
    model for that (``docs/embedders.md``).

    Hashes are CRC-32, so vectors are the same in every process and run.
    """

    #: Words whose features are remembered; the memory is emptied when it is full.
    cache_size = 1 << 15

    def __init__(self, dimension: int = 384) -> None:
        if dimension < 8:
            raise ValueError(f"dimension: must be at least 8, got {dimension}")
        self.dimension = dimension
        self.name = f"hashing-v1-{dimension}"
        self._words: dict[str, _Word] = {}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self.dimension})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors

    def embed_array(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """The vectors of :meth:`embed` as one C-contiguous float64 array, a row per text.

        The embedded index reads its rows without making a float object per
        component. A word's hashes are computed once and remembered; each text
        then only hashes its word pairs, and the whole batch is summed,
        normalised and divided in numpy. Every weight is a multiple of 1/4, so
        the sums (and the sums of squares) are exact in any order: the vectors
        are the same, to the bit, as adding one feature at a time.
        """
        words_seen = self._words
        learn = self._learn
        crc32 = zlib.crc32
        word_hashes: list[int] = []
        word_weights: list[float] = []
        word_counts: list[int] = []
        pair_hashes: list[int] = []
        pair_counts: list[int] = []
        for text in texts:
            entries = [
                words_seen.get(w) or learn(w)
                for w in _WORD.findall(text.lower())
                if w not in _STOPWORDS
            ]
            before = len(word_hashes)
            for hashes, weights, _, _ in entries:
                word_hashes += hashes
                word_weights += weights
            word_counts.append(len(word_hashes) - before)
            pair_hashes += [crc32(b[2], a[3]) for a, b in pairwise(entries)]
            pair_counts.append(max(0, len(entries) - 1))
        return self._vectors(word_hashes, word_weights, word_counts, pair_hashes, pair_counts)

    def _learn(self, word: str) -> _Word:
        """The features of one word (itself and its trigrams), hashed, and remembered."""
        crc32 = zlib.crc32
        raw = word.encode("utf-8", "surrogatepass")
        hashes = [crc32(raw)]
        weights = [1.0]
        if len(word) > 3:  # trigrams of short words are mostly collisions
            padded = f"^{word}$"
            hashes += [
                crc32(padded[i : i + 3].encode("utf-8", "surrogatepass"))
                for i in range(len(padded) - 2)
            ]
            weights += [0.25] * (len(padded) - 2)
        # A pair "a b" is hashed as b's bytes continuing the CRC of "a ".
        entry = (tuple(hashes), tuple(weights), raw, crc32(b" ", hashes[0]))
        if len(self._words) >= self.cache_size:
            self._words.clear()
        self._words[word] = entry
        return entry

    def _vectors(
        self,
        word_hashes: list[int],
        word_weights: list[float],
        word_counts: list[int],
        pair_hashes: list[int],
        pair_counts: list[int],
    ) -> npt.NDArray[np.float64]:
        import numpy as np  # here: importing it costs a pipeline that never embeds

        dimension = self.dimension
        rows = len(word_counts)
        hashes = np.array(word_hashes + pair_hashes, dtype=np.int64)
        weights = np.concatenate(
            [np.array(word_weights, dtype=np.float64), np.full(len(pair_hashes), 0.5)]
        )
        weights[hashes & 0x80000000 == 0] *= -1.0
        row = np.arange(rows, dtype=np.int64)
        cells = np.concatenate([np.repeat(row, word_counts), np.repeat(row, pair_counts)])
        cells *= dimension
        cells += hashes % dimension
        sums = np.bincount(cells, weights, minlength=rows * dimension)
        vectors = sums.astype(np.float64, copy=False).reshape(rows, dimension)  # int if empty
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        np.divide(vectors, norms[:, None], out=vectors, where=norms[:, None] > 0)
        return vectors
