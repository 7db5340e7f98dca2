"""Arguments of the pipeline's calls are checked up front: a bad one is an InvalidOp naming it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from anchorline import (
    Add,
    AsyncPipeline,
    InvalidOp,
    Pipeline,
    Reserve,
    Update,
    UpdateContent,
)

BAD_THRESHOLDS = [math.nan, math.inf, True, 1e300, -1]


@pytest.mark.parametrize("older_than", BAD_THRESHOLDS, ids=repr)
def test_sweep_refuses_a_threshold_that_is_not_a_finite_number(
    pipeline: Pipeline, older_than: float
) -> None:
    placeholder = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    with pytest.raises(InvalidOp, match=r"^older_than: must be a number of seconds from 0 to 1e12"):
        pipeline.sweep(older_than)
    assert pipeline.get(placeholder) is not None  # nothing was swept


def test_sweep_on_open_refuses_nan_and_leaves_nothing_open(db_path: str) -> None:
    with pytest.raises(InvalidOp, match="sweep_on_open"):
        Pipeline.open(db_path, sweep_on_open=math.nan, load_entrypoints=False)
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="the file is free"))


@pytest.mark.parametrize(
    "ops",
    [None, Add(conversation_id="c", role="user", content="one op"), {"kind": "add"}, "ops"],
    ids=["None", "an op", "a dict", "a str"],
)
def test_persist_many_refuses_what_is_not_a_list_of_ops(pipeline: Pipeline, ops: Any) -> None:
    with pytest.raises(InvalidOp, match=r"^ops: must be a list of ops, got \w+") as info:
        pipeline.persist_many(ops)
    assert info.value.op_index is None
    assert pipeline.messages("c") == []


# (the value given, what the message says about it)
BAD_GUARDS: list[tuple[Any, str]] = [
    ({"MID": "abc"}, r"expect_updated_at\['MID'\]: must be the message's updated_at .* got 'abc'"),
    ({"MID": None}, r"expect_updated_at\['MID'\]: .* got None"),
    ({"MID": True}, r"expect_updated_at\['MID'\]: .* got True"),
    ({"MID": -1}, r"expect_updated_at\['MID'\]: .* got -1"),
    ({"MID": 1.5}, r"expect_updated_at\['MID'\]: .* got 1.5"),
    ({1: 5}, r"expect_updated_at: keys are message ids \(strings\), got 1"),
    ([("MID", 5)], r"expect_updated_at: must map message ids .* got list"),
    ("MID", r"expect_updated_at: must map message ids .* got str"),
]


def with_id(guard: Any, mid: str) -> Any:
    if isinstance(guard, dict):
        return {mid if key == "MID" else key: value for key, value in guard.items()}
    if isinstance(guard, list):
        return [(mid, value) for _, value in guard]
    return guard


@pytest.mark.parametrize(("guard", "message"), BAD_GUARDS, ids=[repr(g) for g, _ in BAD_GUARDS])
def test_a_malformed_expect_updated_at_is_refused_before_anything_is_written(
    pipeline: Pipeline, guard: Any, message: str
) -> None:
    mid = pipeline.persist(Add(conversation_id="c", role="user", content="v1")).message.id
    guard = with_id(guard, mid)
    message = message.replace("MID", mid)
    with pytest.raises(InvalidOp, match=message):
        pipeline.persist(UpdateContent(message_id=mid, content="v2"), expect_updated_at=guard)
    with pytest.raises(InvalidOp, match=message):
        pipeline.persist_many(
            [
                Update(message_id=mid, metadata={"k": 1}),
                UpdateContent(message_id=mid, content="v2"),
            ],
            expect_updated_at=guard,
        )
    stored = pipeline.get(mid)
    assert stored is not None and stored.content == "v1" and stored.metadata == {}


def test_the_async_pipeline_checks_the_same_arguments(tmp_path: Path) -> None:
    async def refused(call: Callable[[], Awaitable[Any]], match: str) -> None:
        with pytest.raises(InvalidOp, match=match):
            await call()

    async def main() -> None:
        async with await AsyncPipeline.open(str(tmp_path / "a.db"), load_entrypoints=False) as ap:
            added = await ap.persist(Add(conversation_id="c", role="user", content="v1"))
            mid = added.message.id  # type: ignore[union-attr]
            update = UpdateContent(message_id=mid, content="v2")
            await refused(lambda: ap.sweep(math.nan), "older_than")
            await refused(lambda: ap.sweep(math.inf), "older_than")
            await refused(lambda: ap.persist_many(None), "ops")  # type: ignore[arg-type]
            await refused(
                lambda: ap.persist(update, expect_updated_at={mid: "abc"}),  # type: ignore[dict-item]
                r"expect_updated_at\[",
            )
            await refused(
                lambda: ap.persist_many([update], expect_updated_at={mid: None}),  # type: ignore[dict-item]
                r"expect_updated_at\[",
            )
            stored = await ap.get(mid)
            assert stored is not None and stored.content == "v1"

    asyncio.run(main())
