"""The runnable examples in docs/ run."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from anchorline import Add, Conflict, MessageNotFound, Pipeline, Reserve, Update, UpdateContent

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_a_redirecting_plugin_can_index_its_own_writes(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "redirect_with_index.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert (
        "ephemeral:1: haiku on autumn leaves" in lines[0]
    )  # the redirected message is found first
    assert "ephemeral:1 holds ['haiku on autumn leaves']" in lines  # and read back


def test_a_redirecting_plugin_answers_the_reads_of_what_it_wrote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runpy.run_path(str(EXAMPLES / "archive_plugin.py"), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == [
        "get: old",
        "archived: ['old', []]",
        "swept: True",  # its placeholder, found through list_reserved
        "in SQLite: []",  # SQLite never saw the archived conversation
        "live in SQLite: ['new']",
    ]


@pytest.fixture
def archive() -> Any:
    return runpy.run_path(str(EXAMPLES / "archive_plugin.py"))["Archive"]()


def test_the_archive_example_keeps_the_terminal_contract(archive: Any, db_path: str) -> None:
    with Pipeline.open(db_path, plugins=[archive]) as pipeline:
        first = pipeline.persist(
            Add(conversation_id="archive:1", role="user", content="hi", client_message_id="k")
        )
        again = pipeline.persist(
            Add(conversation_id="archive:1", role="user", content="hi", client_message_id="k")
        )
        assert again.deduplicated and again.message == first.message
        with pytest.raises(Conflict):
            pipeline.persist(
                Add(
                    conversation_id="archive:2",
                    role="user",
                    content="x",
                    message_id=first.message.id,
                )
            )
        mid = pipeline.persist(Reserve(conversation_id="archive:1", role="assistant")).message.id
        pipeline.persist(UpdateContent(message_id=mid, content="par", final=False))
        done = pipeline.persist(UpdateContent(message_id=mid, content="partial, then done"))
        assert done.message.status == "complete"
        assert done.message.updated_at > done.message.created_at > first.message.created_at
        with pytest.raises(Conflict, match="final"):
            pipeline.persist(UpdateContent(message_id=mid, content="late", final=False))
        with pytest.raises(Conflict, match="changed since"):
            pipeline.persist(
                Update(message_id=mid, metadata={"x": 1}),
                expect_updated_at={mid: done.message.updated_at - 1},
            )
        assert [m.content for m in pipeline.messages("archive:1", limit=1)] == [
            "partial, then done"
        ]


def test_the_archive_example_is_all_or_none_with_the_rest_of_persist_many(
    archive: Any, db_path: str
) -> None:
    with Pipeline.open(db_path, plugins=[archive]) as pipeline:
        kept = pipeline.persist(Add(conversation_id="archive:1", role="user", content="kept"))
        with pytest.raises(MessageNotFound):
            pipeline.persist_many(
                [
                    Add(conversation_id="archive:1", role="user", content="new"),
                    Update(message_id=kept.message.id, metadata={"seen": True}),
                    Add(conversation_id="live", role="user", content="new"),
                    Update(message_id="no-such-message", metadata={}),
                ]
            )
        assert pipeline.messages("archive:1") == [kept.message]
        assert pipeline.messages("live") == []


def test_the_minilm_example_defines_an_embedder_plugin() -> None:
    # Running it needs torch and the model package (docs/embedders.md); here we
    # check that it is importable and answers the embedder hook by name.
    namespace = runpy.run_path(str(EXAMPLES / "minilm_embedder.py"))
    plugin = namespace["plugin"]
    assert hasattr(plugin.embedder, "anchorline_impl")
    assert namespace["MiniLMEmbedder"].dimension == 384
