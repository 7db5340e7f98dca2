"""What a store reads back is what the op carried, value for value, on every store."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchorline import Add, Pipeline, Reserve, Update, UpdateContent

_names = itertools.count()

# Every JSON value an op accepts: integers of any size, floats, any text but a lone
# surrogate (which JSON text cannot carry).
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.integers(min_value=-(2**80), max_value=-(2**62))
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
blocks = st.lists(
    st.dictionaries(st.text(max_size=6), values, max_size=3).map(lambda d: {**d, "type": "data"}),
    min_size=1,
    max_size=3,
)
metadata = st.dictionaries(st.text(max_size=6), values, max_size=4)


def test_integers_beyond_64_bits_read_back_exactly_and_survive_an_update(
    pipeline: Pipeline,
) -> None:
    # 2**70 + 1 is no float: a float read back would not compare equal.
    content = [{"type": "data", "order_id": 2**64 + 1, "low": -(2**63) - 1, "f": 0.5}]
    added = pipeline.persist(
        Add(conversation_id="c", role="tool", content=content, metadata={"trace_id": 2**70 + 1})
    ).message
    stored = pipeline.get(added.id)
    assert stored is not None
    assert stored.content == content
    assert type(stored.content[0]["order_id"]) is int
    assert stored.metadata == {"trace_id": 2**70 + 1}
    pipeline.persist(Update(message_id=added.id, metadata={"other": 1}))
    updated = pipeline.get(added.id)
    assert updated is not None
    assert updated.metadata == {"trace_id": 2**70 + 1, "other": 1}
    assert type(updated.metadata["trace_id"]) is int
    assert pipeline.messages("c")[0].content == content


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=blocks, first=metadata, second=metadata, final=blocks)
def test_any_json_value_reads_back_equal_before_and_after_an_update(
    pipeline: Pipeline,
    content: list[dict[str, Any]],
    first: dict[str, Any],
    second: dict[str, Any],
    final: list[dict[str, Any]],
) -> None:
    conversation = f"v{next(_names)}"
    added = pipeline.persist(
        Add(conversation_id=conversation, role="tool", content=content, metadata=first)
    ).message
    assert (added.content, added.metadata) == (content, first)
    read = pipeline.get(added.id)
    assert read is not None
    assert (read.content, read.metadata) == (content, first)

    updated = pipeline.persist(Update(message_id=added.id, metadata=second)).message
    assert updated.metadata == {**first, **second}
    read = pipeline.messages(conversation)[0]
    assert (read.content, read.metadata) == (content, {**first, **second})

    pipeline.persist(UpdateContent(message_id=added.id, content=final))
    read = pipeline.get(added.id)
    assert read is not None
    assert (read.content, read.metadata) == (final, {**first, **second})


def test_the_text_of_a_message_is_its_string_or_its_text_blocks_joined(
    pipeline: Pipeline,
) -> None:
    said = " Lisbon at 9:40\n"  # kept as written: nothing is stripped
    blocks = [
        {"type": "text", "text": "It rains"},
        {"type": "image", "url": "https://example.com/rain.png"},
        {"type": "text", "text": 14},  # not a string: no text
        {"type": "tool_result", "output": "14 degrees"},
        {"type": "text", "text": "in Lisbon."},
    ]
    plain = pipeline.persist(Add(conversation_id="c", role="user", content=said)).message
    mixed = pipeline.persist(Add(conversation_id="c", role="tool", content=blocks)).message
    placeholder = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message
    expected = {plain.id: said, mixed.id: "It rains\nin Lisbon.", placeholder.id: ""}
    assert {m.id: m.text for m in (plain, mixed, placeholder)} == expected
    assert {m.id: m.text for m in pipeline.messages("c")} == expected
    read = pipeline.get(mixed.id)
    assert read is not None and read.text == "It rains\nin Lisbon."
    finished = pipeline.persist(
        UpdateContent(message_id=placeholder.id, content=[{"type": "text", "text": "Yes."}])
    ).message
    assert finished.text == "Yes."
