"""The JSON Schema of an op's dict form, generated from the op classes.

``op_json_schema()`` builds it from the attrs classes in :mod:`anchorline.ops`:
their fields, defaults and validators, and the ``:param`` lines of their
docstrings. The package ships the result as ``ops.schema.json``
(:func:`shipped_op_schema` loads it); regenerate it after changing an op with

    python -m anchorline.op_schema > pipeline/ops.schema.json

The schema checks everything JSON Schema can say. What it cannot, ``parse_op``
still refuses: JSON nested deeper than ``MAX_JSON_DEPTH``, ids holding a lone
surrogate, non-finite numbers, and the size limits a pipeline is opened with.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from importlib import resources
from typing import Any, get_type_hints

import attrs

from . import ops
from .ops import MAX_ID_LENGTH, OP_TYPES, ROLES, Content, Metadata

SCHEMA_FILE = "ops.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_DEFS: dict[str, dict[str, Any]] = {
    "id": {
        "description": f"A non-empty string of at most {MAX_ID_LENGTH} characters, without NUL.",
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "pattern": "^[^\\u0000]*$",
    },
    "role": {"description": "Who wrote the message.", "enum": sorted(ROLES)},
    "content": {
        "description": "The text, or a list of content blocks.",
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"$ref": "#/$defs/content_block"}},
        ],
    },
    "content_block": {
        "description": "One block of content: any JSON object with a string 'type'.",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string"}},
    },
    "metadata": {"description": "Any JSON object.", "type": "object"},
}

# What each validator in anchorline.ops enforces, said in JSON Schema. A field
# this table cannot describe stops the generator, so the schema never lags.
_BY_VALIDATOR: dict[object, dict[str, Any]] = {
    ops._valid_id: {"$ref": "#/$defs/id"},
    ops._valid_optional_id: {"anyOf": [{"$ref": "#/$defs/id"}, {"type": "null"}]},
    ops._valid_role: {"$ref": "#/$defs/role"},
    ops._valid_final: {"type": "boolean"},
    ops._valid_seq: {"type": "integer", "minimum": 1},
}
_BY_TYPE: tuple[tuple[object, dict[str, Any]], ...] = (
    (Content, {"$ref": "#/$defs/content"}),
    (Metadata, {"$ref": "#/$defs/metadata"}),
)

_PARAM = re.compile(r":param (\w+): (.*)")
# Docstrings speak Python and reST; the schema speaks JSON and plain backticks.
_IN_JSON = {"``None``": "`null`", "``True``": "`true`", "``False``": "`false`", "``": "`"}


def _as_json_prose(text: str) -> str:
    for python, json_word in _IN_JSON.items():
        text = text.replace(python, json_word)
    return text[:1].upper() + text[1:]


def _field_docs(cls: type) -> dict[str, str]:
    """The ``:param name:`` descriptions of a class docstring, one line each."""
    docs: dict[str, str] = {}
    current: str | None = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        if match := _PARAM.match(line):
            current = match.group(1)
            docs[current] = match.group(2)
        elif current is not None and line.startswith(" "):
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _field_schema(cls: type, field: attrs.Attribute[Any], hint: object) -> dict[str, Any]:
    if field.validator in _BY_VALIDATOR:
        return dict(_BY_VALIDATOR[field.validator])
    for alias, schema in _BY_TYPE:
        if hint == alias:
            return dict(schema)
    raise TypeError(
        f"{cls.__name__}.{field.name}: no JSON Schema for this field;"
        " describe its validator or type in anchorline.op_schema"
    )


def _default(field: attrs.Attribute[Any]) -> object:
    factory = getattr(field.default, "factory", None)  # attrs.Factory(dict), say
    return factory() if callable(factory) else field.default


def _op_schema(cls: type[ops.PersistOp]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    docs = _field_docs(cls)
    properties: dict[str, Any] = {"kind": {"const": cls.kind}}
    required = ["kind"]
    for field in attrs.fields(cls):
        if not field.init:
            continue  # derived on the op (the cached JSON), never part of its dict form
        schema = _field_schema(cls, field, hints[field.name])
        if field.name in docs:
            schema["description"] = _as_json_prose(docs[field.name])
        if field.default is attrs.NOTHING:
            required.append(field.name)
        else:
            schema["default"] = _default(field)
        properties[field.name] = schema
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return {
        "title": cls.__name__,
        "description": _as_json_prose(summary),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def op_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one op as a dict: a ``oneOf`` on ``kind``."""
    kinds = [cls.kind for cls in OP_TYPES]
    return {
        "$schema": DIALECT,
        "title": "Anchorline op",
        "description": (
            "One write op, as parse_op reads it and dump_op writes it; one per line"
            " in the files `anchorline ingest` reads. See docs/ops-format.md."
        ),
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": kinds}},
        "oneOf": [{"$ref": f"#/$defs/{kind}"} for kind in kinds],
        "$defs": {**{cls.kind: _op_schema(cls) for cls in OP_TYPES}, **_DEFS},
    }


def render(schema: dict[str, Any]) -> str:
    """The text of ``ops.schema.json`` for ``schema``: indented, ending in a newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def shipped_op_schema() -> dict[str, Any]:
    """The schema the package ships in ``ops.schema.json``."""
    text = resources.files("anchorline").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


if __name__ == "__main__":
    sys.stdout.write(render(op_json_schema()))
