"""How plugins take part in the persist chain."""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

import apsw
import pytest

from anchorline import (
    Add,
    Added,
    Context,
    Deleted,
    Message,
    PersistOp,
    PersistResult,
    Pipeline,
    PluginError,
    Reserve,
    UpdateContent,
    hookimpl,
)
from anchorline.plugins.in_memory import InMemoryTerminal


def rows(path: str) -> int:
    conn = apsw.Connection(path)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl(wrapper=True)
    def persist(
        self, op: PersistOp, context: Context
    ) -> Generator[None, PersistResult, PersistResult]:
        self.seen.append(("before", op))
        try:
            result = yield
        except Exception as e:
            self.seen.append(("error", e))
            raise
        self.seen.append(("after", result))
        return result


def test_a_wrapper_observes_the_op_and_the_result(db_path: str) -> None:
    recorder = Recorder()
    with Pipeline.open(db_path, plugins=[recorder], load_entrypoints=False) as pipeline:
        op = Add(conversation_id="c", role="user", content="hi")
        result = pipeline.persist(op)
    assert recorder.seen == [("before", op), ("after", result)]


def test_a_wrapper_sees_the_exception(db_path: str) -> None:
    recorder = Recorder()
    with Pipeline.open(db_path, plugins=[recorder], load_entrypoints=False) as pipeline:
        with pytest.raises(LookupError):
            pipeline.persist(UpdateContent(message_id="nope", content="x"))
    assert recorder.seen[1][0] == "error"


def test_a_plugin_that_answers_short_circuits_the_terminal(db_path: str) -> None:
    class Answer:
        @hookimpl
        def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
            if isinstance(op, Add):
                message = Message(
                    id="fake",
                    conversation_id=op.conversation_id,
                    role=op.role,
                    content=op.content,
                    metadata=op.metadata,
                    status="complete",
                    created_at=1,
                    updated_at=1,
                )
                return Added(message=message)
            return None

    with Pipeline.open(db_path, plugins=[Answer()], load_entrypoints=False) as pipeline:
        result = pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        assert result.message.id == "fake"
        # Ops the plugin passes on still reach SQLite.
        pipeline.persist(Reserve(conversation_id="c", role="assistant"))
    assert rows(db_path) == 1


def test_a_plugin_can_redirect_writes_and_reads_to_another_store(db_path: str) -> None:
    class Redirect:
        """Sends conversations whose id starts with 'mem:' to an in-memory store."""

        def __init__(self) -> None:
            self.store = InMemoryTerminal()

        @hookimpl
        def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
            if getattr(op, "conversation_id", "").startswith("mem:") or (
                hasattr(op, "message_id") and op.message_id in self.store.messages
            ):
                return self.store.persist(op, context)
            return None

        @hookimpl
        def get_message(self, message_id: str, context: Context) -> Message | None:
            return self.store.get_message(message_id, context)

        @hookimpl
        def list_messages(
            self, conversation_id: str, limit: int | None, context: Context
        ) -> list[Message] | None:
            if conversation_id.startswith("mem:"):
                return self.store.list_messages(conversation_id, limit, context)
            return None

    redirect = Redirect()
    with Pipeline.open(db_path, plugins=[redirect], load_entrypoints=False) as pipeline:
        mid = pipeline.persist(Reserve(conversation_id="mem:1", role="assistant")).message.id
        pipeline.persist(UpdateContent(message_id=mid, content="streamed"))
        pipeline.persist(Add(conversation_id="disk", role="user", content="hi"))
        assert pipeline.get(mid).content == "streamed"  # type: ignore[union-attr]
        assert [m.id for m in pipeline.messages("mem:1")] == [mid]
        assert len(pipeline.messages("disk")) == 1
    assert rows(db_path) == 1
    assert list(redirect.store.messages) == [mid]


def test_a_plugin_registered_after_open_still_runs(db_path: str) -> None:
    recorder = Recorder()
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        pipeline.plugin_manager.register(recorder, name="late")
        try:
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        finally:
            pipeline.plugin_manager.unregister(name="late")
    assert [kind for kind, _ in recorder.seen] == ["before", "after"]


def test_a_wrapper_that_forgets_to_return_the_result_is_named(db_path: str) -> None:
    class Forgets:
        @hookimpl(wrapper=True)
        def persist(
            self, op: PersistOp, context: Context
        ) -> Generator[None, PersistResult, PersistResult]:
            yield  # the result is dropped
            return None  # type: ignore[return-value]

    with Pipeline.open(db_path, plugins=[Forgets()], load_entrypoints=False) as pipeline:
        with pytest.raises(
            PluginError, match=r"wrapper=True implementation must return .*'Forgets'"
        ):
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    assert rows(db_path) == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_wrapper_that_raises_fails_the_op_and_writes_nothing(db_path: str, where: str) -> None:
    class Veto:
        @hookimpl(wrapper=True)
        def persist(
            self, op: PersistOp, context: Context
        ) -> Generator[None, PersistResult, PersistResult]:
            if where == "before":
                raise PermissionError("vetoed")
            result = yield
            raise PermissionError("vetoed after the terminal wrote")
            return result  # pragma: no cover

    with Pipeline.open(db_path, plugins=[Veto()], load_entrypoints=False) as pipeline:
        with pytest.raises(PermissionError, match="vetoed"):
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    assert rows(db_path) == 0


def test_an_after_persist_error_is_logged_and_the_op_succeeds(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    class Broken:
        @hookimpl
        def after_persist(self, op: PersistOp, result: PersistResult, context: Context) -> None:
            raise RuntimeError("metrics backend down")

    class Counter:
        @hookimpl
        def after_persist(self, op: PersistOp, result: PersistResult) -> None:
            seen.append(result.kind)

    with Pipeline.open(db_path, plugins=[Counter(), Broken()], load_entrypoints=False) as pipeline:
        with caplog.at_level(logging.ERROR, logger="anchorline"):
            result = pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        assert pipeline.get(result.message.id) is not None
    assert seen == ["add"]
    assert "metrics backend down" in caplog.text


def test_after_persist_runs_only_once_the_write_is_durable(db_path: str) -> None:
    counts: list[int] = []

    class CheckDurable:
        @hookimpl
        def after_persist(self, op: PersistOp, result: PersistResult) -> None:
            counts.append(rows(db_path))  # a second connection sees only committed rows

    with Pipeline.open(db_path, plugins=[CheckDurable()], load_entrypoints=False) as pipeline:
        pipeline.persist_many(
            [Add(conversation_id="c", role="user", content=str(i)) for i in range(3)]
        )
    assert counts == [3, 3, 3]


def test_a_plugin_returning_the_wrong_kind_raises_plugin_error(db_path: str) -> None:
    class Wrong:
        @hookimpl
        def persist(self, op: PersistOp, context: Context) -> PersistResult:
            return Deleted(message_id="x", existed=False)

    with Pipeline.open(db_path, plugins=[Wrong()], load_entrypoints=False) as pipeline:
        with pytest.raises(PluginError) as info:
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    message = str(info.value)
    assert "persist" in message and "add op" in message and "Deleted" in message
    assert isinstance(info.value, TypeError)
    assert rows(db_path) == 0


def test_no_terminal_means_plugin_error_not_none() -> None:
    class NoWrites:
        pass

    with Pipeline.open(":memory:", terminal=NoWrites(), load_entrypoints=False) as pipeline:
        with pytest.raises(PluginError, match="no plugin returned a result"):
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))


def test_a_replacement_terminal_touches_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    with Pipeline.open(str(path), terminal=InMemoryTerminal(), load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        assert pipeline.plugin_manager.get_plugin("terminal").__class__ is InMemoryTerminal
    assert list(tmp_path.iterdir()) == []


def test_each_pipeline_has_its_own_plugin_manager(db_path: str) -> None:
    recorder = Recorder()
    with (
        Pipeline.open(db_path, plugins=[recorder], load_entrypoints=False) as first,
        Pipeline.open(":memory:", terminal=InMemoryTerminal(), load_entrypoints=False) as second,
    ):
        assert first.plugin_manager is not second.plugin_manager
        second.persist(Add(conversation_id="c", role="user", content="hi"))
    assert recorder.seen == []


def test_anchorline_trace_prints_hook_calls(
    db_path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANCHORLINE_TRACE", "1")
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    err = capsys.readouterr().err
    assert "persist [hook]" in err and "op:" in err


def test_lifecycle_hooks_bracket_the_pipeline(db_path: str) -> None:
    events: list[str] = []

    class Lifecycle:
        @hookimpl
        def pipeline_opened(self, context: Context) -> None:
            events.append(f"opened {context.pipeline.settings.path == db_path}")

        @hookimpl
        def pipeline_closing(self) -> None:
            events.append("closing")

    with Pipeline.open(db_path, plugins=[Lifecycle()], load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    assert events == ["opened True", "closing"]


def test_a_plugin_failing_to_open_fails_open_and_releases_the_store(db_path: str) -> None:
    class Broken:
        @hookimpl
        def pipeline_opened(self) -> None:
            raise RuntimeError("missing configuration")

    with pytest.raises(RuntimeError, match="missing configuration"):
        Pipeline.open(db_path, plugins=[Broken()], load_entrypoints=False)
    # The file is not left locked or half-open: another pipeline writes at once.
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
