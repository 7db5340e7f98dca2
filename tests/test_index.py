"""Completed messages reach the vector index; placeholders and partials never do."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from anchorline import (
    Add,
    ConfigurationError,
    Delete,
    IndexUnavailable,
    Message,
    Pipeline,
    Reserve,
    Update,
    UpdateContent,
    hookimpl,
)
from anchorline.memory.index.embedders import HashingEmbedder
from anchorline.plugins.in_memory import InMemoryTerminal
from anchorline.plugins.indexer import Indexer


class CountingEmbedder(HashingEmbedder):
    """The real hashing embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        super().__init__(dimension=64)
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return super().embed(texts)


@pytest.fixture(params=[":memory:", "folder"])
def indexed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Pipeline, CountingEmbedder]]:
    """A pipeline indexing synchronously into Qdrant local mode, in memory or in a folder."""
    embedder = CountingEmbedder()
    index = ":memory:" if request.param == ":memory:" else "local"
    with Pipeline.open(
        str(tmp_path / "test.db"),
        index=index,
        embedder=embedder,
        index_sync=True,
        load_entrypoints=False,
    ) as pipeline:
        yield pipeline, embedder


def indexer(pipeline: Pipeline) -> Indexer:
    found = pipeline.plugin_manager.get_plugin("indexer")
    assert isinstance(found, Indexer)
    return found


def points(pipeline: Pipeline) -> set[str]:
    index = indexer(pipeline).index
    assert index is not None
    return index.message_ids()


def test_placeholders_and_partials_never_reach_the_index(
    indexed: tuple[Pipeline, CountingEmbedder],
) -> None:
    pipeline, embedder = indexed
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    pipeline.persist(UpdateContent(message_id=mid, content="half a secret answ", final=False))
    pipeline.persist(UpdateContent(message_id=mid, content="half a secret answer", final=False))
    pipeline.flush_index()
    assert points(pipeline) == set()
    assert indexer(pipeline).index.payload(mid) is None  # type: ignore[union-attr]
    assert embedder.texts == []


def test_final_content_is_indexed_with_its_payload(
    indexed: tuple[Pipeline, CountingEmbedder],
) -> None:
    pipeline, embedder = indexed
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    pipeline.persist(
        UpdateContent(message_id=mid, content=[{"type": "text", "text": "the answer"}])
    )
    user = pipeline.persist(Add(conversation_id="c", role="user", content="the question")).message
    pipeline.flush_index()
    assert points(pipeline) == {mid, user.id}
    payload = indexer(pipeline).index.payload(user.id)  # type: ignore[union-attr]
    assert payload == {
        "message_id": user.id,
        "conversation_id": "c",
        "role": "user",
        "created_at": user.created_at,
        # A folder keeps no metadata: a deleted point's payload lingers in its files.
        **({} if indexer(pipeline).index.embedded else {"metadata": {}}),  # type: ignore[union-attr]
    }
    assert sorted(embedder.texts) == ["the answer", "the question"]


def test_delete_removes_the_point(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, _ = indexed
    mid = pipeline.persist(Add(conversation_id="c", role="user", content="forget me")).message.id
    pipeline.flush_index()
    assert points(pipeline) == {mid}
    pipeline.persist(Delete(message_id=mid))
    pipeline.flush_index()
    assert points(pipeline) == set()


def test_an_edit_re_embeds(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, embedder = indexed
    mid = pipeline.persist(
        Add(conversation_id="c", role="user", content="volcanoes erupt lava")
    ).message.id
    pipeline.persist(Add(conversation_id="c", role="user", content="penguins swim in cold water"))
    pipeline.persist(UpdateContent(message_id=mid, content="glaciers carve valleys"))
    pipeline.flush_index()
    assert embedder.texts[-1] == "glaciers carve valleys"
    assert pipeline.search("glaciers valleys", limit=1)[0].message.id == mid
    assert pipeline.search("volcanoes lava", limit=2)[0].message.id != mid


def test_a_metadata_update_refreshes_the_payload_without_re_embedding(
    indexed: tuple[Pipeline, CountingEmbedder],
) -> None:
    pipeline, embedder = indexed
    mid = pipeline.persist(Add(conversation_id="c", role="user", content="hello there")).message.id
    pipeline.flush_index()
    embedded = len(embedder.texts)
    pipeline.persist(Update(message_id=mid, metadata={"pinned": True}))
    pipeline.flush_index()
    assert len(embedder.texts) == embedded
    stored = indexer(pipeline).index.payload(mid)
    assert stored is not None
    if indexer(pipeline).index.embedded:  # a folder keeps no metadata (erasure)
        assert "metadata" not in stored and stored["message_id"] == mid
    else:
        assert stored["metadata"] == {"pinned": True}


def test_a_metadata_update_of_a_placeholder_indexes_nothing(
    indexed: tuple[Pipeline, CountingEmbedder],
) -> None:
    pipeline, embedder = indexed
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    pipeline.persist(Update(message_id=mid, metadata={"model": "m"}))
    pipeline.flush_index()
    assert points(pipeline) == set() and embedder.texts == []


def test_messages_without_text_are_not_indexed(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, _ = indexed
    pipeline.persist(Add(conversation_id="c", role="tool", content=[{"type": "image", "url": "x"}]))
    pipeline.persist(Add(conversation_id="c", role="user", content="   "))
    pipeline.flush_index()
    assert points(pipeline) == set()


def test_search_puts_the_relevant_message_first(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, _ = indexed
    corpus = {
        "cooking": "Simmer the tomato sauce with garlic and basil for twenty minutes.",
        "astronomy": "Jupiter has dozens of moons, and Europa hides an ocean under its ice.",
        "finance": "Quarterly revenue grew while operating expenses and tax payments fell.",
        "gardening": "Prune the roses in early spring and water the seedlings every morning.",
        "networking": "The router forwards packets and the firewall blocks inbound ports.",
    }
    ids = {
        topic: pipeline.persist(Add(conversation_id=topic, role="user", content=text)).message.id
        for topic, text in corpus.items()
    }
    pipeline.flush_index()
    queries = {
        "cooking": "how long should the garlic tomato sauce simmer",
        "astronomy": "which moon of jupiter has an ocean",
        "finance": "did revenue grow this quarter",
        "gardening": "when to prune roses",
        "networking": "firewall inbound ports",
    }
    for topic, query in queries.items():
        hits = pipeline.search(query, limit=3)
        assert hits[0].message.id == ids[topic], (query, [h.message.content for h in hits])
        assert hits[0].score > hits[1].score


def test_search_filters_by_conversation(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, _ = indexed
    pipeline.persist(Add(conversation_id="a", role="user", content="rust borrow checker"))
    b = pipeline.persist(
        Add(conversation_id="b", role="user", content="rust borrow checker again")
    ).message
    pipeline.flush_index()
    hits = pipeline.search("borrow checker", conversation_id="b")
    assert [h.message.id for h in hits] == [b.id]


def test_search_reads_messages_back_through_the_read_hooks(
    indexed: tuple[Pipeline, CountingEmbedder],
) -> None:
    pipeline, _ = indexed
    mid = pipeline.persist(
        Add(conversation_id="c", role="user", content="redacted secret")
    ).message.id
    pipeline.flush_index()

    class Redact:
        @hookimpl
        def get_message(self, message_id: str) -> Message | None:
            stored = pipeline.plugin_manager.get_plugin("terminal").get_message(message_id, None)
            return None if stored is None else attrs.evolve(stored, content="[redacted]")

    pipeline.plugin_manager.register(Redact(), name="redact")
    try:
        [hit] = pipeline.search("secret")
    finally:
        pipeline.plugin_manager.unregister(name="redact")
    assert hit.message.id == mid and hit.message.content == "[redacted]"


def test_bad_search_arguments_name_the_field(indexed: tuple[Pipeline, CountingEmbedder]) -> None:
    pipeline, _ = indexed
    with pytest.raises(ValueError, match="query"):
        pipeline.search("  ")
    with pytest.raises(ValueError, match="limit"):
        pipeline.search("x", limit=0)


def test_search_without_an_index_says_how_to_turn_it_on(db_path: str) -> None:
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        with pytest.raises(IndexUnavailable, match="index='local'"):
            pipeline.search("anything")


def test_an_index_with_a_replacement_terminal_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="replacement terminal"):
        Pipeline.open(
            ":memory:", terminal=InMemoryTerminal(), index=":memory:", load_entrypoints=False
        )


def test_the_embedder_hook_supplies_the_embedder(tmp_path: Path) -> None:
    class FakeEmbedder:
        """Deterministic: a one-hot vector on the text's length."""

        name = "fake-length"
        dimension = 8

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [[1.0 if i == len(t) % 8 else 0.0 for i in range(8)] for t in texts]

    class Provider:
        @hookimpl
        def embedder(self) -> FakeEmbedder:
            return FakeEmbedder()

    with Pipeline.open(
        str(tmp_path / "t.db"),
        index=":memory:",
        index_sync=True,
        plugins=[Provider()],
        load_entrypoints=False,
    ) as pipeline:
        a = pipeline.persist(
            Add(conversation_id="c", role="user", content="abc")
        ).message.id  # length 3
        pipeline.persist(Add(conversation_id="c", role="user", content="abcd"))  # length 4
        [best, _] = pipeline.search("xyz", limit=2)  # length 3 too
        assert best.message.id == a and best.score == pytest.approx(1.0)
        assert indexer(pipeline).index.collection == "anchorline_fake-length"  # type: ignore[union-attr]


def test_the_index_text_hook_extracts_other_blocks(tmp_path: Path) -> None:
    class ToolOutput:
        @hookimpl
        def index_text(self, message: Message) -> str | None:
            if message.role == "tool":
                return " ".join(
                    str(b.get("output", "")) for b in message.content if isinstance(b, dict)
                )
            return None

    with Pipeline.open(
        str(tmp_path / "t.db"),
        index=":memory:",
        index_sync=True,
        plugins=[ToolOutput()],
        load_entrypoints=False,
    ) as pipeline:
        mid = pipeline.persist(
            Add(
                conversation_id="c",
                role="tool",
                content=[{"type": "tool_result", "output": "disk usage 93 percent"}],
            )
        ).message.id
        [hit] = pipeline.search("disk usage")
        assert hit.message.id == mid


def test_a_redirected_write_is_not_indexed_unless_the_plugin_indexes_it(tmp_path: Path) -> None:
    class Redirect:
        def __init__(self) -> None:
            self.store = InMemoryTerminal()

        @hookimpl
        def persist(self, op: Any, context: Any) -> Any:
            return (
                self.store.persist(op, context)
                if getattr(op, "conversation_id", "") == "elsewhere"
                else None
            )

    with Pipeline.open(
        str(tmp_path / "t.db"),
        index=":memory:",
        index_sync=True,
        plugins=[Redirect()],
        load_entrypoints=False,
    ) as pipeline:
        pipeline.persist(Add(conversation_id="elsewhere", role="user", content="never indexed"))
        pipeline.persist(Add(conversation_id="here", role="user", content="indexed"))
        assert [h.message.content for h in pipeline.search("indexed never")] == ["indexed"]


class ArrayEmbedder(HashingEmbedder):
    """The hashing embedder, recording the batches its array form is asked for."""

    def __init__(self, wrong_shape: bool = False) -> None:
        super().__init__(dimension=64)
        self.batches: list[list[str]] = []
        self.wrong_shape = wrong_shape

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return super().embed(texts)

    def embed_array(self, texts: Sequence[str]) -> Any:
        self.batches.append(list(texts))
        matrix = super().embed_array(texts)
        return matrix[:, :32] if self.wrong_shape else matrix


NOTES = [
    "My flight leaves at 7.",
    "The quarterly report shows revenue up 12 percent.",
    "Remember to water the tomato plants on the balcony.",
]


def test_a_folder_is_filled_from_the_embedders_array_with_the_same_results(
    tmp_path: Path,
) -> None:
    found = {}
    for name, embedder in (("array", ArrayEmbedder()), ("lists", CountingEmbedder())):
        with Pipeline.open(
            str(tmp_path / f"{name}.db"), index="local", embedder=embedder,
            load_entrypoints=False,
        ) as pipeline:  # fmt: skip
            pipeline.persist_many(
                Add(conversation_id="c", role="user", content=text) for text in NOTES
            )
            pipeline.flush_index(timeout=60)
            hits = pipeline.search("when does my flight leave?", limit=3)
            found[name] = [(hit.message.content, round(hit.score, 6)) for hit in hits]
        if isinstance(embedder, ArrayEmbedder):
            assert embedder.batches[0] == NOTES  # one batch, through the array
    assert found["array"] == found["lists"]
    assert found["array"][0][0] == "My flight leaves at 7."


def test_an_array_of_the_wrong_shape_leaves_the_messages_waiting(tmp_path: Path) -> None:
    with Pipeline.open(
        str(tmp_path / "bad.db"), index="local", embedder=ArrayEmbedder(wrong_shape=True),
        load_entrypoints=False,
    ) as pipeline:  # fmt: skip
        pipeline.persist_many(Add(conversation_id="c", role="user", content=t) for t in NOTES)
        with pytest.raises(IndexUnavailable, match=r"embed_array returned .*\(3, 32\)"):
            pipeline.flush_index(timeout=2)
        status = pipeline.index_status()
        assert status.pending == 3 and status.failing == 3
