"""Hypothesis throws hostile op dicts at parse_op and persist.

Each is refused with a clear InvalidOp, or stored and read back equal.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchorline import Conflict, InvalidOp, MessageNotFound, Pipeline, Reserve, parse_op

from .conftest import knob

KNOWN_IDS = ("known-reserved", "known-complete")

nasty_text = st.one_of(
    st.text(max_size=50),
    st.sampled_from(
        [
            "'; DROP TABLE messages; --",
            '" OR 1=1 --',
            "Robert'); DELETE FROM conversations; --",
            "\x00nul\x00",
            "\ud800 lone surrogate",
            "\udfff",
            "🦜" * 20,
            "",
            " ",
        ]
    ),
    st.text(min_size=5_000, max_size=60_000).map(lambda s: s * 2),  # huge strings
)
non_json = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=4),
    st.builds(object),
    st.tuples(st.integers()),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), nasty_text
)
weird_value: st.SearchStrategy[Any] = st.recursive(
    st.one_of(json_scalar, non_json),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(nasty_text, st.integers()), inner, max_size=3)
    ),
    max_leaves=8,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": [value]}
    return value


field_value = st.one_of(
    nasty_text,
    weird_value,
    st.integers(0, 200).map(deep),
    st.sampled_from(list(KNOWN_IDS)),
    st.sampled_from(["user", "assistant", "system", "tool", "robot"]),
)
content = st.one_of(
    nasty_text,
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.just("text"), "text": nasty_text}),
            st.dictionaries(st.sampled_from(["type", "text", "x"]), field_value, max_size=3),
            weird_value,
        ),
        max_size=3,
    ),
    weird_value,
)
FIELDS = [
    "conversation_id",
    "role",
    "content",
    "metadata",
    "message_id",
    "client_message_id",
    "final",
]
op_dicts = st.fixed_dictionaries(
    {
        "kind": st.one_of(
            st.sampled_from(["add", "reserve", "update_content", "update", "delete"]),
            nasty_text,
            weird_value,
        )
    },
    optional={
        "conversation_id": st.one_of(nasty_text, weird_value),
        "role": st.one_of(st.sampled_from(["user", "assistant", "tool"]), nasty_text, weird_value),
        "content": content,
        "metadata": st.one_of(st.dictionaries(nasty_text, field_value, max_size=4), weird_value),
        "message_id": st.one_of(st.sampled_from(list(KNOWN_IDS)), nasty_text, weird_value),
        "client_message_id": st.one_of(st.none(), nasty_text),
        "final": st.one_of(st.booleans(), weird_value),
        "unexpected": weird_value,
    },
)


json_value: st.SearchStrategy[Any] = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=8,
)
plausible_content = st.one_of(
    nasty_text,
    st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image", "tool_use"]), "text": nasty_text},
            optional={"data": json_value},
        ),
        max_size=3,
    ),
)
plausible_metadata = st.dictionaries(nasty_text, json_value, max_size=4)
ids = st.one_of(st.sampled_from(list(KNOWN_IDS)), nasty_text)
roles = st.sampled_from(["user", "assistant", "system", "tool"])
# Well-formed ops whose values are hostile: SQL, surrogates, huge and deep values.
plausible_ops = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.just("add"),
            "conversation_id": ids,
            "role": roles,
            "content": plausible_content,
        },
        optional={"metadata": plausible_metadata, "client_message_id": nasty_text},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("reserve"), "conversation_id": ids, "role": roles},
        optional={"metadata": plausible_metadata, "message_id": nasty_text},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("update_content"), "message_id": ids, "content": plausible_content},
        optional={"final": st.booleans()},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("update"), "message_id": ids, "metadata": plausible_metadata}
    ),
    st.fixed_dictionaries({"kind": st.just("delete"), "message_id": nasty_text}),
)


def count(conn: apsw.Connection) -> tuple[int, int]:
    messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conversations = conn.execute("SELECT count(DISTINCT conversation_id) FROM messages")
    conversations = conversations.fetchone()[0]
    return int(messages), int(conversations)


def test_hostile_ops_are_refused_or_stored_faithfully(tmp_path: Path, figures: list[str]) -> None:
    examples = knob("FUZZ_EXAMPLES", 400)
    path = tmp_path / "fuzz.db"
    tally = {"refused by parse_op": 0, "refused by persist": 0, "stored": 0}
    with Pipeline.open(str(path), load_entrypoints=False) as pipeline:
        pipeline.persist(
            Reserve(conversation_id="c", role="assistant", message_id="known-reserved")
        )
        pipeline.persist(
            Reserve(conversation_id="c", role="assistant", message_id="known-complete")
        )
        pipeline.persist({"kind": "update_content", "message_id": "known-complete", "content": "x"})
        conn = apsw.Connection(str(path))

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.one_of(plausible_ops, op_dicts))
        def check(data: dict[str, Any]) -> None:
            try:
                op = parse_op(data)
            except InvalidOp as e:
                assert str(e) and ":" in str(e), "the message names the field"
                tally["refused by parse_op"] += 1
                return
            before = count(conn)
            try:
                result = pipeline.persist(op)
            except (InvalidOp, Conflict, MessageNotFound) as e:
                assert str(e)
                assert count(conn) == before, "a refused op left a partial write"
                tally["refused by persist"] += 1
                return
            tally["stored"] += 1
            message = getattr(result, "message", None)
            if message is None:
                return
            stored = pipeline.get(message.id)
            assert stored is not None
            if op.kind in ("add", "update_content"):
                assert stored.content == op.content  # type: ignore[union-attr]
            if op.kind in ("add", "reserve") and not result.deduplicated:  # type: ignore[union-attr]
                assert stored.metadata == op.metadata  # type: ignore[union-attr]
                assert stored.conversation_id == op.conversation_id  # type: ignore[union-attr]

        check()
        conn.close()
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    assert tally["stored"] > 0 and tally["refused by parse_op"] > 0
    figures.append(
        f"bad input: {examples} hypothesis examples; "
        + ", ".join(f"{v} {k}" for k, v in tally.items())
        + "; no crash, no partial row, integrity ok"
    )
