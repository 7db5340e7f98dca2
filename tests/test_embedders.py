"""The default hashing embedder gives the vectors it always gave: an index built by
an earlier release keeps answering searches the same way, without a reindex."""

from __future__ import annotations

import math
import random
import re
import zlib
from itertools import pairwise

import pytest

from anchorline.memory.index.embedders import HashingEmbedder

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
        "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "their", "this", "to",
        "was", "were", "will", "with", "you", "your", "we", "our",
    }
)  # fmt: skip


def reference(text: str, dimension: int) -> list[float]:
    """The embedder as first written: one feature at a time, in plain Python."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    features = [(w, 1.0) for w in words]
    features += [(f"{a} {b}", 0.5) for a, b in pairwise(words)]
    for word in words:
        if len(word) > 3:
            padded = f"^{word}$"
            features += [(padded[i : i + 3], 0.25) for i in range(len(padded) - 2)]
    vector = [0.0] * dimension
    for feature, weight in features:
        h = zlib.crc32(feature.encode("utf-8", "surrogatepass"))
        vector[h % dimension] += weight if h & 0x80000000 else -weight
    norm = math.hypot(*vector)
    return [v / norm for v in vector] if norm else vector


def corpus() -> list[str]:
    rng = random.Random(7)
    vocabulary = [
        "flight", "flights", "leaves", "Lisbon", "revenue", "report", "quarterly", "the",
        "to", "and", "café", "naïve", "Straße", "ÉCOLE", "東京", "駅", "данные", "ünïcödé",
        "x", "ok", "abc", "abcd", "snake_case", "CamelCase", "12", "2026", "3.14", "v1-2",
        "emoji🙂here", "tab\there", "new\nline", "a" * 40, "ﬁnance", "İstanbul", "ß",
    ]  # fmt: skip
    texts = [
        "",
        "   ",
        "the and to of",  # stopwords only: no features, a zero vector
        "!!! ??? ...",
        "flight",
        "flight flight flight flight",
        "My flight leaves at 7.",
        "The quarterly report shows revenue up 12 percent.",
        "Remember to water the tomato plants on the balcony.",
        "word " * 500,
    ]
    for _ in range(400):
        texts.append(" ".join(rng.choices(vocabulary, k=rng.randint(1, 30))))
    for _ in range(100):
        texts.append("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 60))))
    return texts


@pytest.mark.parametrize("dimension", [8, 64, 384, 1000])
def test_vectors_are_the_ones_feature_by_feature_hashing_gives(dimension: int) -> None:
    texts = corpus()
    embedder = HashingEmbedder(dimension)
    expected = [reference(text, dimension) for text in texts]
    assert embedder.embed(texts) == expected
    # Again, from the words it remembers, and one text at a time.
    assert embedder.embed(texts) == expected
    assert [embedder.embed([text])[0] for text in texts[:50]] == expected[:50]


def test_an_empty_batch_gives_no_vectors() -> None:
    assert HashingEmbedder().embed([]) == []


def test_the_words_it_remembers_are_bounded_and_vectors_unchanged_past_it() -> None:
    embedder = HashingEmbedder(64)
    embedder.cache_size = 50
    texts = [f"note{i} about topic{i * 7} and item{i % 13}" for i in range(200)]
    vectors = embedder.embed(texts)
    assert len(embedder._words) <= 50
    assert vectors == [reference(text, 64) for text in texts]


def test_the_array_form_holds_the_same_vectors_as_float64_rows() -> None:
    texts = corpus()[:100]
    matrix = HashingEmbedder(64).embed_array(texts)
    assert matrix.shape == (100, 64) and str(matrix.dtype) == "float64"
    assert matrix.flags["C_CONTIGUOUS"]
    assert matrix.tolist() == [reference(text, 64) for text in texts]
