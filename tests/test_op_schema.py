"""The shipped JSON Schema of ops: up to date with the op classes, and in step with parse_op."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from anchorline import Add, Delete, InvalidOp, Reserve, Update, UpdateContent, dump_op, parse_op
from anchorline.op_schema import op_json_schema, render, shipped_op_schema
from anchorline.ops import MAX_ID_LENGTH, OP_TYPES, ROLES

REGENERATE = "python -m anchorline.op_schema > pipeline/ops.schema.json"
VALIDATOR = Draft202012Validator(shipped_op_schema())
KINDS = [cls.kind for cls in OP_TYPES]


def schema_accepts(data: object) -> bool:
    return bool(VALIDATOR.is_valid(data))


def parse_op_accepts(data: Any) -> bool:
    try:
        parse_op(data)
    except InvalidOp:
        return False
    return True


# --- the shipped file --------------------------------------------------------


def test_the_shipped_schema_is_what_the_generator_produces_now() -> None:
    shipped = resources.files("anchorline").joinpath("ops.schema.json").read_text("utf-8")
    assert shipped == render(op_json_schema()), (
        f"pipeline/ops.schema.json is out of date with the op classes; regenerate it: {REGENERATE}"
    )


def test_the_regenerate_command_prints_the_shipped_schema() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "anchorline.op_schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert json.loads(printed) == shipped_op_schema()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = shipped_op_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_op_field_is_in_the_schema_with_a_description() -> None:
    defs = shipped_op_schema()["$defs"]
    for cls in OP_TYPES:
        op_schema = defs[cls.kind]
        fields = [f.name for f in attrs.fields(cls) if f.init]
        assert list(op_schema["properties"]) == ["kind", *fields]
        assert op_schema["additionalProperties"] is False
        for name in fields:
            assert op_schema["properties"][name].get("description"), f"{cls.kind}.{name}"


def test_the_schema_says_what_the_validators_enforce() -> None:
    defs = shipped_op_schema()["$defs"]
    assert sorted(defs["role"]["enum"]) == sorted(ROLES)
    assert (defs["id"]["minLength"], defs["id"]["maxLength"]) == (1, MAX_ID_LENGTH)
    assert defs["add"]["required"] == ["kind", "conversation_id", "role", "content"]
    assert defs["update_content"]["properties"]["final"]["default"] is True


# --- agreement with parse_op -------------------------------------------------

ADD = {"kind": "add", "conversation_id": "c1", "role": "user", "content": "hi"}
UPDATE_CONTENT = {"kind": "update_content", "message_id": "m1", "content": "hi"}

VALID: list[dict[str, Any]] = [
    ADD,
    {**ADD, "content": ""},
    {**ADD, "content": []},
    {**ADD, "content": [{"type": "text", "text": "hi"}, {"type": "image", "url": "x", "n": 2}]},
    {**ADD, "metadata": {"a": {"b": [1, 2.5, None, True]}}},
    {**ADD, "message_id": None, "client_message_id": None},
    {**ADD, "message_id": "m" * MAX_ID_LENGTH, "client_message_id": "k"},
    {**ADD, "role": "tool"},
    {"kind": "reserve", "conversation_id": "c1", "role": "assistant"},
    {"kind": "reserve", "conversation_id": "c1", "role": "system", "metadata": {"x": 1}},
    UPDATE_CONTENT,
    {**UPDATE_CONTENT, "final": False, "content": [{"type": "text", "text": "h"}]},
    {"kind": "update", "message_id": "m1", "metadata": {}},
    {"kind": "delete", "message_id": "m1"},
]

INVALID: list[dict[str, Any]] = [
    {"kind": "delete", "message_id": "m\x00"},
    {},
    {"conversation_id": "c1", "role": "user", "content": "hi"},
    {**ADD, "kind": "append"},
    {**ADD, "kind": "Add"},
    {**ADD, "kind": 1},
    {**ADD, "kind": None},
    {k: v for k, v in ADD.items() if k != "content"},
    {k: v for k, v in ADD.items() if k != "role"},
    {**ADD, "role": "robot"},
    {**ADD, "role": None},
    {**ADD, "conversation_id": ""},
    {**ADD, "conversation_id": "c" * (MAX_ID_LENGTH + 1)},
    {**ADD, "conversation_id": 5},
    {**ADD, "content": 5},
    {**ADD, "content": None},
    {**ADD, "content": {"type": "text", "text": "a block, not a list"}},
    {**ADD, "content": ["hi"]},
    {**ADD, "content": [{"text": "no type"}]},
    {**ADD, "content": [{"type": 1}]},
    {**ADD, "metadata": []},
    {**ADD, "metadata": None},
    {**ADD, "message_id": ""},
    {**ADD, "client_message_id": 7},
    {**ADD, "text": "hi"},
    {**ADD, "content_json": '"hi"'},
    {"kind": "reserve", "conversation_id": "c1", "role": "assistant", "content": "hi"},
    {**UPDATE_CONTENT, "final": "yes"},
    {**UPDATE_CONTENT, "final": 1},
    {**UPDATE_CONTENT, "final": None},
    {"kind": "update_content", "content": "hi"},
    {"kind": "update", "message_id": "m1"},
    {"kind": "update", "message_id": "m1", "metadata": "x"},
    {"kind": "delete", "message_id": None},
    {"kind": "delete", "message_id": "m1", "conversation_id": "c1"},
]


@pytest.mark.parametrize("data", VALID, ids=repr)
def test_valid_op_dicts_pass_the_schema_and_parse_op(data: dict[str, Any]) -> None:
    VALIDATOR.validate(data)
    dumped = dump_op(parse_op(data))
    assert dumped | data == dumped


@pytest.mark.parametrize("data", INVALID, ids=repr)
def test_invalid_op_dicts_fail_the_schema_and_parse_op(data: dict[str, Any]) -> None:
    assert not schema_accepts(data), "the schema accepts it"
    with pytest.raises(InvalidOp):
        parse_op(data)


ids = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=1,
    max_size=MAX_ID_LENGTH,
)
numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
blocks = st.lists(
    st.dictionaries(st.text(max_size=5), json_values, max_size=2).map(
        lambda d: {**d, "type": "text"}
    ),
    max_size=3,
)
contents = st.text() | blocks
metadatas = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
roles = st.sampled_from(sorted(ROLES))

dumped_ops = st.one_of(
    st.builds(
        Add,
        conversation_id=ids,
        role=roles,
        content=contents,
        metadata=metadatas,
        message_id=st.none() | ids,
        client_message_id=st.none() | ids,
    ),
    st.builds(
        Reserve,
        conversation_id=ids,
        role=roles,
        metadata=metadatas,
        message_id=st.none() | ids,
        client_message_id=st.none() | ids,
    ),
    st.builds(UpdateContent, message_id=ids, content=contents, final=st.booleans()),
    st.builds(Update, message_id=ids, metadata=metadatas),
    st.builds(Delete, message_id=ids),
).map(dump_op)


@given(dumped_ops)
def test_every_op_dump_op_writes_passes_the_schema(data: dict[str, Any]) -> None:
    VALIDATOR.validate(json.loads(json.dumps(data)))  # as a line of JSONL reads back


# Any value may land in any field: right ones, wrong types, edge cases.
edges = st.sampled_from(
    [
        *("", "x" * (MAX_ID_LENGTH + 1), None, 0, 1.5, True, "robot", "User", "Add", [], {}),
        *(["hi"], [{"text": "x"}], [{"type": 1}], [{"type": "text"}], {"type": "text"}),
    ]
)
anything = st.one_of(edges, ids, roles, contents, metadatas, json_values)
FIELDS = sorted({f.name for cls in OP_TYPES for f in attrs.fields(cls) if f.init} | {"text"})


@st.composite
def op_like_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Any mix of fields, under any kind."""
    data: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # mostly with a kind, right or wrong
        data["kind"] = draw(st.sampled_from([*KINDS, "append"]) | json_values)
    for name in FIELDS:
        if draw(st.booleans()):
            data[name] = draw(anything)
    return data


@st.composite
def near_valid_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid op's dict with one field dropped, or set to an edge case or any value."""
    data = dict(json.loads(json.dumps(draw(dumped_ops))))
    name = draw(st.sampled_from([*sorted(data), *FIELDS]))
    if name in data and draw(st.booleans()):
        del data[name]
    else:
        data[name] = draw(edges | anything)
    return data


@given(op_like_dicts() | near_valid_dicts())
def test_the_schema_and_parse_op_agree_on_any_dict(data: dict[str, Any]) -> None:
    data = json.loads(json.dumps(data))
    assert schema_accepts(data) == parse_op_accepts(data), (
        f"schema {'accepts' if schema_accepts(data) else 'rejects'} {data!r}"
    )
