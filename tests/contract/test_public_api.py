"""Wrong types and edge values thrown at every public entry point: what escapes is an
``AnchorlineError`` (naming the argument), never a raw ``TypeError``, ``OverflowError``,
``UnicodeEncodeError`` or a database driver's error, on every store."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchorline import (
    AnchorlineError,
    ConfigurationError,
    Delete,
    InvalidOp,
    Limits,
    Pipeline,
    Reserve,
    RetryPolicy,
    Update,
    UpdateContent,
)

#: An error about an argument starts with its name (``limit: ...``, ``roles: ...``,
#: ``expect_updated_at['m']: ...``, ``plugins[0]: ...``).
NAMES_ITS_ARGUMENT = re.compile(r"^[a-z_]+(\[[^\]]*\])*( [a-z_]+)*: ")


def _names_its_argument(error: AnchorlineError) -> None:
    if isinstance(error, InvalidOp | ConfigurationError):
        assert NAMES_ITS_ARGUMENT.match(str(error)), str(error)


hostile: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-(2**63) + 2),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -0.0, 5e-324]),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "a\ud800",
            "a\x00b",
            "99999999999999999999:c",
            "-99999999999999999999:c",
            "1:",
            ":c",
            "x" * 300,
            "\x1b[2J",
            "٣:c",
            "--5:c",
        ]
    ),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
)


def _calls(pipeline: Pipeline) -> dict[str, Callable[[Any, Any], object]]:
    """Each public method, given two hostile values (what it does not take is fixed)."""

    def streamed(a: Any, b: Any) -> None:
        with pipeline.stream(a, role=b):
            pass

    def streamed_options(a: Any, b: Any) -> None:
        with pipeline.stream("c", metadata=a, flush_interval=b, client_message_id=a) as s:
            s.append(b)

    def guarded(kind: type, a: Any) -> object:
        """A valid op on a stored message, guarded by a hostile ``expect_updated_at``."""
        mid = pipeline.persist(Reserve(conversation_id="g", role="assistant")).message.id
        op = {
            UpdateContent: UpdateContent(message_id=mid, content="x"),
            Update: Update(message_id=mid, metadata={"k": 1}),
            Delete: Delete(message_id=mid),
        }[kind]
        return pipeline.persist(op, expect_updated_at={mid: a})

    return {
        "persist": lambda a, b: pipeline.persist(a, expect_updated_at=b),
        "persist_guarded_content": lambda a, b: guarded(UpdateContent, a),
        "persist_guarded_update": lambda a, b: guarded(Update, a),
        "persist_guarded_delete": lambda a, b: guarded(Delete, a),
        "persist_many": lambda a, b: pipeline.persist_many(a, expect_updated_at=b),
        "get": lambda a, b: pipeline.get(a),
        "messages": lambda a, b: pipeline.messages(a, limit=b),
        "messages_after": lambda a, b: pipeline.messages("c", after_seq=a, roles=b),
        "context": lambda a, b: pipeline.context(a, as_of_seq=b),
        "changes": lambda a, b: pipeline.changes(a, b),
        "follow": lambda a, b: list(pipeline.follow(a, timeout=0)),
        "follow_timeout": lambda a, b: pipeline.follow(None, timeout=a),  # checked at once
        "trim_changes": lambda a, b: pipeline.trim_changes(a),
        "conversations": lambda a, b: pipeline.conversations(a, b),
        "conversations_after": lambda a, b: pipeline.conversations(after=a),
        "threads": lambda a, b: pipeline.threads(a),
        "search": lambda a, b: pipeline.search(a, conversation_id=b),
        "search_limit": lambda a, b: pipeline.search("q", limit=a),
        "forget": lambda a, b: pipeline.forget(a),
        "compact": lambda a, b: pipeline.compact(a, b, a),
        "compact_seq": lambda a, b: pipeline.compact("c", "summary", a, metadata=b),
        "sweep": lambda a, b: pipeline.sweep(a),
        "stream": streamed,
        "stream_options": streamed_options,
        "flush_index": lambda a, b: pipeline.flush_index(a),
    }


METHODS = sorted(_calls(None).keys())  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_only_anchorline_errors_escape_the_pipeline(pipeline: Pipeline, method: str) -> None:
    call = _calls(pipeline)[method]

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(a=hostile, b=hostile)
    def check(a: Any, b: Any) -> None:
        try:
            call(a, b)
        except AnchorlineError as e:
            _names_its_argument(e)

    check()


OPEN_OPTIONS = (
    "path", "terminal", "plugins", "load_entrypoints", "retry", "index", "embedder",
    "index_api_key", "index_sync", "index_drain", "vfs", "limits", "sweep_on_open",
    "durability",
)  # fmt: skip


@pytest.mark.parametrize("option", OPEN_OPTIONS)
def test_only_anchorline_errors_escape_pipeline_open(
    option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # whatever a value makes of the path, it lands here

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(value=hostile)
    def check(value: Any) -> None:
        options: dict[str, Any] = {"path": str(tmp_path / "a.db"), "load_entrypoints": False}
        options[option] = value
        try:
            Pipeline.open(**options).close()
        except AnchorlineError as e:
            _names_its_argument(e)

    check()


@pytest.mark.parametrize("kind", [Limits, RetryPolicy])
def test_only_anchorline_errors_escape_the_settings_classes(kind: type) -> None:
    fields = [f.name for f in kind.__attrs_attrs__]  # type: ignore[attr-defined]

    @settings(max_examples=100, deadline=None)
    @given(field=st.sampled_from(fields), value=hostile)
    def check(field: str, value: Any) -> None:
        try:
            made = kind(**{field: value})
        except AnchorlineError as e:
            _names_its_argument(e)
            return
        if kind is RetryPolicy:  # what a store does with it
            made.backoff(1_000_000)
            assert made.busy_timeout_ms >= 0

    check()
