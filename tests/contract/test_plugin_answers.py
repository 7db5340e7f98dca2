"""A plugin's wrong answer or failure, on every store: the error names the plugin and the
hook, and nothing of the op or its batch is written."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from anchorline import (
    Add,
    ContentUpdated,
    Context,
    PersistOp,
    PersistResult,
    Pipeline,
    PluginError,
    Reserve,
    UpdateContent,
    hookimpl,
)

# --- firstresult hooks that answer with the wrong type ----------------------


class DictPersist:
    @hookimpl
    def persist(self, op: PersistOp) -> object:
        if isinstance(op, UpdateContent):
            return {"kind": "update_content", "message_id": op.message_id}
        return None


def test_persist_returning_a_dict_names_the_plugin_and_writes_nothing(
    pipeline: Pipeline,
) -> None:
    pipeline.plugin_manager.register(DictPersist(), name="dict-persist")
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    with pytest.raises(PluginError) as info:
        pipeline.persist(UpdateContent(message_id=mid, content="answer"))
    message = str(info.value)
    assert message.startswith("persist: plugin 'dict-persist' returned dict")
    assert "update_content op" in message and "expected ContentUpdated" in message
    assert pipeline.get(mid).content == []  # type: ignore[union-attr]


def test_a_wrong_answer_mid_batch_names_the_plugin_and_rolls_the_batch_back(
    pipeline: Pipeline,
) -> None:
    mid = pipeline.persist(Reserve(conversation_id="c", role="assistant")).message.id
    pipeline.plugin_manager.register(DictPersist(), name="dict-persist")
    with pytest.raises(PluginError, match="plugin 'dict-persist' returned dict") as info:
        pipeline.persist_many(
            [
                Add(conversation_id="c", role="user", content="written, then rolled back"),
                UpdateContent(message_id=mid, content="answer"),
            ]
        )
    assert info.value.op_index == 1
    assert [m.id for m in pipeline.messages("c")] == [mid]


def test_get_message_returning_a_str_names_the_plugin(pipeline: Pipeline) -> None:
    class Text:
        @hookimpl
        def get_message(self, message_id: str) -> str:
            return "not a message"

    pipeline.plugin_manager.register(Text(), name="text-reader")
    with pytest.raises(PluginError, match="get_message: plugin 'text-reader' returned str"):
        pipeline.get("m1")


@pytest.mark.parametrize(
    ("answer", "described"),
    [((), "tuple"), ([{"id": "m"}], "a list holding a dict"), ("m", "str")],
)
def test_list_messages_returning_something_else_names_the_plugin(
    pipeline: Pipeline, answer: object, described: str
) -> None:
    class Odd:
        @hookimpl
        def list_messages(self) -> object:
            return answer

    pipeline.plugin_manager.register(Odd(), name="odd-lister")
    with pytest.raises(PluginError) as info:
        pipeline.messages("c")
    assert str(info.value) == (
        f"list_messages: plugin 'odd-lister' returned {described}, expected list[Message]"
    )


def test_list_reserved_returning_something_else_names_the_plugin(pipeline: Pipeline) -> None:
    class Odd:
        @hookimpl
        def list_reserved(self) -> object:
            return {"m1": "stale"}

    pipeline.plugin_manager.register(Odd(), name="odd-sweeper")
    with pytest.raises(PluginError, match="list_reserved: plugin 'odd-sweeper' returned dict"):
        pipeline.sweep(older_than=0)


def test_with_several_plugins_on_the_hook_the_message_names_each_candidate(
    pipeline: Pipeline,
) -> None:
    class PassOn:
        @hookimpl
        def get_message(self) -> None:
            return None

    class Text:
        @hookimpl
        def get_message(self) -> str:
            return "not a message"

    pipeline.plugin_manager.register(Text(), name="text-reader")
    pipeline.plugin_manager.register(PassOn(), name="pass-on")
    with pytest.raises(PluginError) as info:
        pipeline.get("m1")
    # In call order; the built-in terminal, which answers last, is not a suspect.
    assert "one of the plugins 'pass-on', 'text-reader' returned str" in str(info.value)


# --- a wrapper that fails, a plugin that answers for another message -------


class FailOnThird:
    def __init__(self) -> None:
        self.seen = 0

    @hookimpl(wrapper=True)
    def persist(
        self, op: PersistOp, context: Context
    ) -> Generator[None, PersistResult, PersistResult]:
        result = yield
        self.seen += 1
        if self.seen == 3:
            raise RuntimeError("plugin bug after the terminal wrote op 3")
        return result


def test_a_wrapper_failing_mid_batch_leaves_nothing_of_the_batch(pipeline: Pipeline) -> None:
    pipeline.plugin_manager.register(FailOnThird(), name="fail-on-third")
    with pytest.raises(RuntimeError, match="op 3"):
        pipeline.persist_many(
            [Add(conversation_id="c", role="user", content=str(i)) for i in range(5)]
        )
    assert pipeline.messages("c") == []


def test_a_plugin_answering_with_the_wrong_message_is_caught(pipeline: Pipeline) -> None:
    class Confused:
        @hookimpl
        def persist(self, op: PersistOp, context: Context) -> PersistResult | None:
            if op.kind == "update_content":
                return ContentUpdated(message=context.pipeline.messages("c")[0])
            return None

    first = pipeline.persist(Add(conversation_id="c", role="user", content="a")).message.id
    second = pipeline.persist(Add(conversation_id="c", role="user", content="b")).message.id
    pipeline.plugin_manager.register(Confused(), name="confused")
    with pytest.raises(PluginError, match=f"for message '{second}' with message '{first}'"):
        pipeline.persist({"kind": "update_content", "message_id": second, "content": "c"})
