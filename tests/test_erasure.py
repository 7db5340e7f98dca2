"""Forgetting erases: no text of the conversation is left in the SQLite file or the index."""

from __future__ import annotations

from pathlib import Path

from anchorline import Add, Pipeline, Update

SECRET = "zebracornflakes"
KEPT = "keepsakemarmalade"


def _holding(folder: Path, needle: str) -> list[str]:
    """The files under ``folder`` whose bytes contain ``needle``."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    )


def _converse(pipeline: Pipeline, conversation_id: str, text: str, n: int) -> None:
    for i in range(n):
        mid = pipeline.persist(
            Add(
                conversation_id=conversation_id,
                role="user",
                content=f"{text} number {i} " + "padding " * 50,
                metadata={"note": f"{text} meta {i}"},
            )
        ).message.id
        pipeline.persist(Update(message_id=mid, metadata={"seen": f"{text} again"}))
    with pipeline.stream(conversation_id, metadata={"topic": text}) as s:
        for _ in range(20):
            s.append(f"{text} streamed ")
            s.flush()


def test_no_text_of_a_forgotten_conversation_is_left_in_the_sqlite_file(tmp_path: Path) -> None:
    with Pipeline.open(str(tmp_path / "chat.db"), load_entrypoints=False) as pipeline:
        _converse(pipeline, "forgotten", SECRET, 40)
        _converse(pipeline, "kept", KEPT, 2)
        assert _holding(tmp_path, SECRET)  # the check sees the text while it is stored
        pipeline.forget("forgotten")
    # Closing the last connection checkpoints the WAL into the file and removes it.
    assert _holding(tmp_path, SECRET) == []
    assert _holding(tmp_path, KEPT) == ["chat.db"]


def test_no_text_of_a_forgotten_conversation_is_left_in_the_index_folder(tmp_path: Path) -> None:
    with Pipeline.open(
        str(tmp_path / "chat.db"), index="local", index_sync=True, load_entrypoints=False
    ) as pipeline:
        _converse(pipeline, "forgotten", SECRET, 10)
        _converse(pipeline, "kept", KEPT, 2)
        assert pipeline.search(SECRET, conversation_id="forgotten")
        # The scan reads the points' payload (their conversation ids are in it) ...
        assert _holding(tmp_path / "chat.db.index", "forgotten")
        pipeline.forget("forgotten")
        pipeline.flush_index(timeout=30)
        assert pipeline.search(SECRET, conversation_id="forgotten") == []
        # ... which holds ids, never the messages' text or metadata.
        assert _holding(tmp_path / "chat.db.index", SECRET) == []
        assert pipeline.search(KEPT, conversation_id="kept")
    assert _holding(tmp_path, SECRET) == []
