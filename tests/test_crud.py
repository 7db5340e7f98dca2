"""The terminal is a thin dispatch: the pipeline and the CRUD function, called in a
transaction of the store's, write the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

from anchorline import Add, Delete, Pipeline, Reserve, Update, UpdateContent
from anchorline.memory.sqlite import crud
from anchorline.memory.sqlite.store import SQLiteStore

SCRIPT: list[Any] = [
    Add(
        conversation_id="c",
        role="user",
        content="question",
        metadata={"lang": "en"},
        message_id="u1",
        client_message_id="turn-1",
    ),
    Reserve(conversation_id="c", role="assistant", message_id="a1", metadata={"model": "m"}),
    UpdateContent(message_id="a1", content=[{"type": "text", "text": "ans"}], final=False),
    UpdateContent(message_id="a1", content=[{"type": "text", "text": "answer"}]),
    Update(message_id="a1", metadata={"tokens": 7}),
    Add(
        conversation_id="c",
        role="tool",
        content=[{"type": "tool_result", "id": "t"}],
        message_id="t1",
    ),
    Delete(message_id="t1"),
    Add(
        conversation_id="c", role="user", content="question", client_message_id="turn-1"
    ),  # deduplicated
]

DIRECT = {
    Add: crud.add_message,
    Reserve: crud.reserve_message,
    UpdateContent: crud.update_message_content,
    Update: crud.update_message_metadata,
    Delete: crud.delete_message,
}


def snapshot(path: Path) -> tuple[list[Any], list[Any]]:
    conn = apsw.Connection(str(path))
    try:
        messages = conn.execute(
            "SELECT id, conversation_id, role, content, metadata, status, client_message_id,"
            " typeof(created_at), created_at <= updated_at FROM messages ORDER BY id"
        ).fetchall()
        conversations = conn.execute(
            "SELECT DISTINCT conversation_id FROM messages ORDER BY 1"
        ).fetchall()
        return messages, conversations
    finally:
        conn.close()


@pytest.mark.parametrize("steps", range(1, len(SCRIPT) + 1))
def test_each_op_through_the_pipeline_gives_the_rows_of_the_direct_call(
    tmp_path: Path, steps: int
) -> None:
    via_pipeline, direct = tmp_path / "pipeline.db", tmp_path / "direct.db"
    pipeline_results = []
    with Pipeline.open(str(via_pipeline), load_entrypoints=False) as pipeline:
        for op in SCRIPT[:steps]:
            pipeline_results.append(pipeline.persist(op))
    store = SQLiteStore(str(direct))
    try:
        direct_results = [
            store.write(lambda c, op=op: DIRECT[type(op)](c, op)) for op in SCRIPT[:steps]
        ]
    finally:
        store.close()
    assert snapshot(via_pipeline) == snapshot(direct)
    assert [type(r) for r in pipeline_results] == [type(r) for r in direct_results]


def test_an_add_completing_its_placeholder_is_queued_for_the_index(tmp_path: Path) -> None:
    with Pipeline.open(
        str(tmp_path / "i.db"), index=":memory:", index_sync=True, load_entrypoints=False
    ) as pipeline:
        mid = pipeline.persist(
            Reserve(conversation_id="c", role="assistant", client_message_id="k")
        ).message.id
        pipeline.persist(
            Add(
                conversation_id="c",
                role="assistant",
                content="glaciers carve valleys",
                client_message_id="k",
            )
        )
        pipeline.flush_index()
        [hit] = pipeline.search("glaciers valleys", limit=1)
        assert hit.message.id == mid and hit.message.content == "glaciers carve valleys"
