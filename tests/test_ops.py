from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anchorline import (
    Add,
    AnchorlineError,
    Delete,
    InvalidOp,
    Reserve,
    Update,
    UpdateContent,
    dump_op,
    parse_op,
)

ids = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=40
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
metadata = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
blocks = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image"]), "text": st.text()}),
    max_size=3,
)
content = st.text() | blocks
roles = st.sampled_from(["user", "assistant", "system", "tool"])
optional_ids = st.none() | ids

ops = st.one_of(
    st.builds(
        Add,
        conversation_id=ids,
        role=roles,
        content=content,
        metadata=metadata,
        message_id=optional_ids,
        client_message_id=optional_ids,
    ),
    st.builds(
        Reserve,
        conversation_id=ids,
        role=roles,
        metadata=metadata,
        message_id=optional_ids,
        client_message_id=optional_ids,
    ),
    st.builds(UpdateContent, message_id=ids, content=content, final=st.booleans()),
    st.builds(Update, message_id=ids, metadata=metadata),
    st.builds(Delete, message_id=ids),
)


@given(ops)
def test_every_op_round_trips_through_its_kind_tag(op: Any) -> None:
    data = dump_op(op)
    assert data["kind"] == op.kind
    assert parse_op(data) == op


def test_dump_op_gives_plain_fields_and_the_kind() -> None:
    op = UpdateContent(message_id="m1", content="hi", final=False)
    assert dump_op(op) == {
        "kind": "update_content",
        "message_id": "m1",
        "content": "hi",
        "final": False,
    }


def test_ops_are_frozen_and_keyword_only() -> None:
    op = Delete(message_id="m1")
    with pytest.raises(AttributeError):
        op.message_id = "m2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Delete("m1")  # type: ignore[misc]


def test_defaults_match_the_contract() -> None:
    add = Add(conversation_id="c", role="user", content="x")
    assert (add.metadata, add.message_id, add.client_message_id) == ({}, None, None)
    assert UpdateContent(message_id="m", content="x").final is True


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"kind": "launch"}, "kind", "unknown op kind"),
        ({"conversation_id": "c"}, "kind", "missing"),
        ({"kind": 7}, "kind", "unknown op kind"),
        ({"kind": "delete"}, "message_id", "required field missing"),
        (
            {"kind": "add", "conversation_id": "c", "role": "user"},
            "content",
            "required field missing",
        ),
        ({"kind": "delete", "message_id": "m", "force": True}, "force", "unknown field"),
        ({"kind": "delete", "message_id": 5}, "message_id", "must be a string"),
        ({"kind": "delete", "message_id": ""}, "message_id", "must not be empty"),
        ({"kind": "reserve", "conversation_id": "c", "role": "robot"}, "role", "must be one of"),
        ({"kind": "update", "message_id": "m", "metadata": []}, "metadata", "must be a dict"),
        (
            {"kind": "update", "message_id": "m", "metadata": {"a": math.nan}},
            "metadata['a']",
            "nan",
        ),
        (
            {"kind": "update", "message_id": "m", "metadata": {"a": {1: "x"}}},
            "metadata['a']",
            "key 1",
        ),
        (
            {"kind": "update_content", "message_id": "m", "content": 3},
            "content",
            "string or a list",
        ),
        (
            {"kind": "update_content", "message_id": "m", "content": ["x"]},
            "content[0]",
            "content block",
        ),
        (
            {"kind": "update_content", "message_id": "m", "content": "x", "final": "yes"},
            "final",
            "true or false",
        ),
        (
            {
                "kind": "add",
                "conversation_id": "c",
                "role": "user",
                "content": [{"type": "t", "x": {1, 2}}],
            },
            "content[0]['x']",
            "set is not JSON",
        ),
        ({"kind": "delete", "message_id": "\ud800"}, "message_id", "lone surrogate"),
        (
            {"kind": "reserve", "conversation_id": "a\x00b", "role": "user"},
            "conversation_id",
            "NUL character",
        ),
    ],
)
def test_parse_op_rejects_bad_dicts_naming_the_field(
    data: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(InvalidOp) as info:
        parse_op(data)
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert problem in message


def test_parse_op_rejects_non_dicts() -> None:
    with pytest.raises(InvalidOp, match="op: must be a dict"):
        parse_op(["add"])  # type: ignore[arg-type]


def test_invalid_op_is_a_value_error_and_an_anchorline_error() -> None:
    with pytest.raises(ValueError):
        Reserve(conversation_id="", role="user")
    assert issubclass(InvalidOp, AnchorlineError)


def test_deep_nesting_is_refused_not_crashed() -> None:
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(InvalidOp, match="nested deeper"):
        Update(message_id="m", metadata={"deep": deep})


def test_cycles_are_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidOp, match="nested deeper"):
        Update(message_id="m", metadata=loop)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(text=st.text() | st.text(st.characters(max_codepoint=0x7F)), value=_JSON)
@example(text="del \x7f, tab \t, \u00e9", value=[1e16, 2**64, 1e-05, "\ud800"])
def test_the_stored_json_is_the_compact_ascii_json_the_standard_library_writes(
    text: str, value: object
) -> None:
    def stdlib(v: object) -> str:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    block = {"type": "text", "text": text, "extra": value}
    assert Add(conversation_id="c", role="user", content=text).content_json == stdlib(text)
    op = Add(conversation_id="c", role="user", content=[block], metadata={"v": value})
    assert op.content_json == stdlib([block])
    assert op.metadata_json == stdlib({"v": value})
