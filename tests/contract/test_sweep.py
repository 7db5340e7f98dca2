"""Stranded placeholders are recovered: empty ones deleted, partial ones finalised."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchorline import (
    Conflict,
    InvalidOp,
    Limits,
    Message,
    Pipeline,
    Reserve,
    Update,
    UpdateContent,
    hookimpl,
)


def stale(pipeline: Pipeline, content: object = None) -> str:
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    if content is not None:
        pipeline.persist(UpdateContent(message_id=mid, content=content, final=False))  # type: ignore[arg-type]
    return mid


def test_sweep_deletes_empty_and_finalises_partial_placeholders(pipeline: Pipeline) -> None:
    empty = stale(pipeline)
    partial = stale(pipeline, "half an ans")
    report = pipeline.sweep(older_than=0)
    assert report.deleted == (empty,) and report.finalized == (partial,) and report.total == 2
    assert pipeline.get(empty) is None
    recovered = pipeline.get(partial)
    assert (
        recovered is not None
        and recovered.status == "complete"
        and recovered.content == "half an ans"
    )
    assert recovered.metadata["interrupted"] is True


def test_sweep_leaves_recent_and_complete_messages_alone(pipeline: Pipeline) -> None:
    recent = stale(pipeline, "still streaming")
    done = pipeline.persist(UpdateContent(message_id=stale(pipeline), content="done")).message.id
    report = pipeline.sweep(older_than=3600)
    assert report.total == 0
    assert pipeline.get(recent).status == "reserved"  # type: ignore[union-attr]
    assert pipeline.get(done).status == "complete"  # type: ignore[union-attr]


def test_a_message_written_while_the_sweep_runs_is_skipped_not_overwritten(
    pipeline: Pipeline,
) -> None:
    mid = stale(pipeline, "old partial")
    snapshot = pipeline.get(mid)
    assert snapshot is not None

    class StaleView:
        """Answers the sweep with the snapshot, as if the agent wrote right after the listing."""

        @hookimpl
        def list_reserved(self) -> list[Message]:
            return [snapshot]

    pipeline.persist(UpdateContent(message_id=mid, content="the agent's final answer"))
    pipeline.plugin_manager.register(StaleView(), name="stale-view")
    try:
        report = pipeline.sweep(older_than=0)
    finally:
        pipeline.plugin_manager.unregister(name="stale-view")
    assert report.skipped == (mid,) and report.total == 0
    assert pipeline.get(mid).content == "the agent's final answer"  # type: ignore[union-attr]


def test_expect_updated_at_refuses_a_changed_message(pipeline: Pipeline) -> None:
    mid = stale(pipeline, "v1")
    seen = pipeline.get(mid).updated_at  # type: ignore[union-attr]
    pipeline.persist(UpdateContent(message_id=mid, content="v2", final=False))
    with pytest.raises(Conflict, match="changed since"):
        pipeline.persist(Update(message_id=mid, metadata={"x": 1}), expect_updated_at={mid: seen})
    current = pipeline.get(mid)
    assert current is not None and current.metadata == {}
    pipeline.persist(
        Update(message_id=mid, metadata={"x": 1}), expect_updated_at={mid: current.updated_at}
    )
    assert pipeline.get(mid).metadata == {"x": 1}  # type: ignore[union-attr]


def test_sweep_on_open(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with Pipeline.open(path, load_entrypoints=False) as pipeline:
        mid = stale(pipeline, "left behind")
    with Pipeline.open(path, load_entrypoints=False, sweep_on_open=0) as pipeline:
        assert pipeline.get(mid).status == "complete"  # type: ignore[union-attr]


def test_sweep_rejects_a_negative_threshold(pipeline: Pipeline) -> None:
    with pytest.raises(InvalidOp, match="older_than"):
        pipeline.sweep(older_than=-1)


def test_content_over_the_limit_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    limits = Limits(max_content_bytes=1000, max_metadata_bytes=100)
    with Pipeline.open(str(tmp_path / "l.db"), limits=limits, load_entrypoints=False) as pipeline:
        mid = stale(pipeline, "small")
        with pytest.raises(InvalidOp, match=r"content: 1,\d{3} bytes .* limit of 1,000"):
            pipeline.persist(UpdateContent(message_id=mid, content="x" * 1200))
        with pytest.raises(InvalidOp, match="metadata:") as info:
            pipeline.persist_many(
                [
                    Update(message_id=mid, metadata={"ok": 1}),
                    Update(message_id=mid, metadata={"big": "y" * 200}),
                ]
            )
        assert info.value.op_index == 1
        stored = pipeline.get(mid)
        assert stored is not None and stored.content == "small" and stored.metadata == {}


def test_the_default_limits_are_generous(pipeline: Pipeline) -> None:
    mid = stale(pipeline)
    pipeline.persist(UpdateContent(message_id=mid, content="z" * 1_000_000))
    assert len(pipeline.get(mid).content) == 1_000_000  # type: ignore[arg-type,union-attr]
