"""AnchorlineSession against the real OpenAI Agents SDK: its Session protocol, and its Runner."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.memory import (
    OpenAIResponsesCompactionSession,
    Session,
    SessionSettings,
    SQLiteSession,
)
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from anchorline import Add, Pipeline, Reserve, UpdateContent, hookimpl
from anchorline.integrations.openai_agents import AnchorlineSession, summary

ITEMS: list[Any] = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Add the numbers."}],
        "encrypted_content": "gAAAAB...",
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "add",
        "arguments": '{"a": 2, "b": 3}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "5"},
    {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "5", "annotations": [], "logprobs": []}],
    },
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_it_is_an_agents_sdk_session(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s1", pipeline)
    assert isinstance(session, Session)
    assert session.session_id == "s1"


def test_every_kind_of_item_reads_back_exactly(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s1", pipeline)
    run(session.add_items(ITEMS[:3]))
    run(session.add_items(ITEMS[3:]))
    assert run(session.get_items()) == ITEMS
    assert run(session.get_items(limit=2)) == ITEMS[-2:]
    roles = [m.role for m in pipeline.messages("s1")]
    assert roles == ["user", "system", "assistant", "tool", "tool", "assistant"]


def test_the_default_limit_comes_from_session_settings(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s1", pipeline, session_settings=SessionSettings(limit=1))
    run(session.add_items(ITEMS))
    assert run(session.get_items()) == ITEMS[-1:]
    assert run(session.get_items(limit=3)) == ITEMS[-3:]


def test_pop_item_removes_the_newest_and_clear_forgets_the_session_only(
    pipeline: Pipeline,
) -> None:
    session, other = AnchorlineSession("s1", pipeline), AnchorlineSession("s2", pipeline)
    run(session.add_items(ITEMS))
    run(other.add_items(ITEMS[:1]))
    assert run(session.pop_item()) == ITEMS[-1]
    assert run(session.get_items()) == ITEMS[:-1]
    run(session.clear_session())
    assert run(session.get_items()) == []
    assert run(session.pop_item()) is None
    assert run(other.get_items()) == ITEMS[:1]


def test_a_message_written_through_the_pipeline_reads_as_a_plain_item(pipeline: Pipeline) -> None:
    pipeline.persist(Add(conversation_id="s1", role="user", content="typed elsewhere"))
    pipeline.persist(Add(conversation_id="s1", role="tool", content="42"))
    assert run(AnchorlineSession("s1", pipeline).get_items()) == [
        {"role": "user", "content": "typed elsewhere"},
        {"role": "assistant", "content": "42"},  # a tool output needs its call: model text
    ]


def test_an_answer_still_streaming_is_not_an_item_yet(pipeline: Pipeline) -> None:
    pipeline.persist(Add(conversation_id="s1", role="user", content="hi"))
    streaming = pipeline.persist(Reserve(conversation_id="s1", role="assistant")).message
    pipeline.persist(UpdateContent(message_id=streaming.id, content="Hel", final=False))
    session = AnchorlineSession("s1", pipeline)
    expected = [{"role": "user", "content": "hi"}]
    assert run(session.get_items()) == expected
    assert run(session.get_items(limit=5)) == expected
    # The placeholder takes no place in a limit: the newest complete ones fill it.
    pipeline.persist(Add(conversation_id="s1", role="user", content="still there?"))
    assert run(session.get_items(limit=2)) == [
        *expected,
        {"role": "user", "content": "still there?"},
    ]


class _Watcher:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def after_persist(self, op: Any, result: Any, context: Any) -> None:
        self.kinds.append(op.kind)


def test_plugins_see_every_write(pipeline: Pipeline) -> None:
    watcher = _Watcher()
    pipeline.plugin_manager.register(watcher)
    session = AnchorlineSession("s1", pipeline)
    run(session.add_items(ITEMS))
    run(session.pop_item())
    run(session.clear_session())
    assert watcher.kinds == ["add"] * len(ITEMS) + ["delete", "forget"]


# --- the SDK's own Runner, with a scripted model ------------------------------------


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


class ScriptedModel(Model):
    """Answers each call with the next scripted output, and keeps what it was sent."""

    def __init__(self, outputs: list[list[Any]]) -> None:
        self.outputs = outputs
        self.inputs: list[Any] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        self.inputs.append(json.loads(json.dumps(input)))
        return ModelResponse(output=self.outputs.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


def _say(text: str, n: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{n}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def _call_add(a: int, b: int) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id="fc_1",
        type="function_call",
        call_id="call_1",
        name="add",
        arguments=json.dumps({"a": a, "b": b}),
        status="completed",
    )


def test_runner_resumes_a_conversation_across_runs_and_processes(tmp_path: Path) -> None:
    model = ScriptedModel([[_call_add(2, 3)], [_say("2 + 3 = 5", 1)], [_say("It was 5.", 2)]])
    agent = Agent(name="calc", instructions="Add numbers.", model=model, tools=[add])
    config = RunConfig(tracing_disabled=True)
    db = str(tmp_path / "chat.db")

    with Pipeline.open(db, load_entrypoints=False) as pipeline:
        session = AnchorlineSession("user-7", pipeline)
        first = run(Runner.run(agent, "What is 2 + 3?", session=session, run_config=config))
        assert first.final_output == "2 + 3 = 5"
    with Pipeline.open(db, load_entrypoints=False) as pipeline:  # a new process, say
        session = AnchorlineSession("user-7", pipeline)
        second = run(Runner.run(agent, "What was it?", session=session, run_config=config))
        assert second.final_output == "It was 5."
        items = run(session.get_items())
    sent = model.inputs[-1]
    kinds = [item.get("type", "message") for item in sent]
    assert kinds == ["message", "function_call", "function_call_output", "message", "message"]
    assert sent[0]["content"] == "What is 2 + 3?" and sent[-1]["content"] == "What was it?"
    assert sent[2]["output"] == "5"
    assert [item.get("type", "message") for item in items] == [*kinds, "message"]
    assert items[:-1] == sent


def test_runner_sends_only_the_limited_history(tmp_path: Path) -> None:
    limit = 2
    model = ScriptedModel([[_say("one", 1)], [_say("two", 2)]])
    agent = Agent(name="a", model=model)
    config = RunConfig(tracing_disabled=True)
    with Pipeline.open(str(tmp_path / "chat.db"), load_entrypoints=False) as pipeline:
        session = AnchorlineSession("s", pipeline, session_settings=SessionSettings(limit=limit))
        run(Runner.run(agent, "first", session=session, run_config=config))
        run(Runner.run(agent, "second", session=session, run_config=config))
        assert len(run(session.get_items(limit=None))) == limit
        assert len(pipeline.messages("s")) == 4
    assert [i.get("content") for i in model.inputs[-1]][-1] == "second"
    assert len(model.inputs[-1]) == limit + 1


def test_runner_takes_session_settings_as_a_dict_and_refuses_unknown_keys(
    tmp_path: Path,
) -> None:
    model = ScriptedModel([[_say("one", 1)], [_say("two", 2)]])
    agent = Agent(name="a", model=model)
    config = RunConfig(tracing_disabled=True)
    with Pipeline.open(str(tmp_path / "chat.db"), load_entrypoints=False) as pipeline:
        session = AnchorlineSession("s", pipeline, session_settings={"limit": 1})
        assert session.session_settings == SessionSettings(limit=1)
        run(Runner.run(agent, "first", session=session, run_config=config))
        second = run(Runner.run(agent, "second", session=session, run_config=config))
        assert second.final_output == "two"
        with pytest.raises(TypeError, match="Unknown session settings: limitt"):
            AnchorlineSession("s", pipeline, session_settings={"limitt": 1})
    # The history the second run sent: the newest item only, then the new question.
    assert [i.get("content") for i in model.inputs[-1]][-1] == "second"
    assert len(model.inputs[-1]) == 2


# --- compaction: the SDK's compaction session over an Anchorline session ------------


class _FakeResponses:
    def __init__(self, output: list[Any]) -> None:
        self.output = output
        self.calls: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return SimpleNamespace(output=self.output, usage=None)


COMPACTED: list[Any] = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
]


def _compacting(pipeline: Pipeline) -> tuple[OpenAIResponsesCompactionSession, _FakeResponses]:
    responses = _FakeResponses(COMPACTED)
    client = SimpleNamespace(responses=responses)
    session = OpenAIResponsesCompactionSession(
        "s1",
        AnchorlineSession("s1", pipeline),
        client=client,  # type: ignore[arg-type]
    )
    return session, responses


def test_run_compaction_records_a_compaction_and_keeps_the_history(pipeline: Pipeline) -> None:
    session, responses = _compacting(pipeline)
    run(session.add_items(ITEMS))
    run(session.run_compaction({"force": True, "compaction_mode": "input"}))
    assert responses.calls[0]["input"][0] == ITEMS[0]
    assert run(session.get_items()) == COMPACTED
    assert len(pipeline.messages("s1")) == len(ITEMS)  # the history is all there
    [compaction, *after] = pipeline.context("s1")
    assert compaction.role == "compaction" and after == []
    run(session.add_items([{"role": "user", "content": "and 4 + 4?"}]))
    assert run(session.get_items()) == [*COMPACTED, {"role": "user", "content": "and 4 + 4?"}]
    assert run(session.get_items(limit=2)) == [
        COMPACTED[-1],
        {"role": "user", "content": "and 4 + 4?"},
    ]


def test_pop_item_reaches_into_the_compaction(pipeline: Pipeline) -> None:
    session, _ = _compacting(pipeline)
    run(session.add_items(ITEMS))
    run(session.run_compaction({"force": True, "compaction_mode": "input"}))
    run(session.add_items([{"role": "user", "content": "next"}]))
    assert run(session.pop_item()) == {"role": "user", "content": "next"}
    assert run(session.pop_item()) == COMPACTED[-1]
    assert run(session.get_items()) == COMPACTED[:1]
    assert run(session.pop_item()) == COMPACTED[0]
    assert run(session.get_items()) == []
    assert run(session.pop_item()) is None
    assert len(pipeline.messages("s1")) == len(ITEMS)


def test_runner_continues_from_the_compacted_history(tmp_path: Path) -> None:
    model = ScriptedModel([[_say("5", 1)], [_say("8", 2)]])
    agent = Agent(name="calc", model=model)
    config = RunConfig(tracing_disabled=True)
    with Pipeline.open(str(tmp_path / "chat.db"), load_entrypoints=False) as pipeline:
        session, _ = _compacting(pipeline)
        run(Runner.run(agent, "What is 2 + 3?", session=session, run_config=config))
        run(session.run_compaction({"force": True, "compaction_mode": "input"}))
        run(Runner.run(agent, "and 4 + 4?", session=session, run_config=config))
        assert len(pipeline.messages("s1")) == 4
    assert model.inputs[-1][:2] == COMPACTED
    assert model.inputs[-1][2]["content"] == "and 4 + 4?"


def test_a_compaction_that_keeps_items_reads_with_and_without_a_limit(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s1", pipeline)
    run(session.add_items(ITEMS[:3]))
    kept = pipeline.messages("s1")[-1]
    summary_item = {"role": "user", "content": "the question, in short"}
    pipeline.compact("s1", summary([summary_item]), kept.seq)
    assert run(session.get_items()) == [summary_item, ITEMS[2]]
    assert run(session.get_items(limit=1)) == [ITEMS[2]]
    assert run(session.get_items(limit=2)) == [summary_item, ITEMS[2]]
    assert run(session.get_items(limit=5)) == [summary_item, ITEMS[2]]


def test_replacing_the_items_of_an_empty_session_adds_them(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s1", pipeline)
    assert run(session._atomic_replace_items(ITEMS[:2])) is True
    assert run(session.get_items()) == ITEMS[:2]
    assert [m.role for m in pipeline.messages("s1")] == ["user", "system"]


# --- the SDK's bounded automatic compaction (_get_compaction_snapshot) -------------


class _RespondingModel(ScriptedModel):
    """A scripted model whose responses have ids, as the Responses API's do: the SDK
    compacts automatically after each of them."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response = await super().get_response(*args, **kwargs)
        response.response_id = f"resp_{len(self.inputs)}"
        return response


SUMMARY: list[Any] = [
    {"role": "user", "content": "the story so far"},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"},
]


def _chat_with_automatic_compaction(session: Any, **kwargs: Any) -> _FakeResponses:
    model = _RespondingModel([[_say(f"answer {n}", n)] for n in range(3)])
    responses = _FakeResponses(SUMMARY)
    compacting = OpenAIResponsesCompactionSession(
        "s",
        session,
        client=SimpleNamespace(responses=responses),  # type: ignore[arg-type]
        should_trigger_compaction=lambda context: True,
        **kwargs,
    )
    agent, config = Agent(name="a", model=model), RunConfig(tracing_disabled=True)
    for question in ("q0", "q1", "q2"):
        run(Runner.run(agent, question, session=compacting, run_config=config))
    return responses


def test_automatic_compaction_under_a_session_limit_matches_the_sdks_sqlite_session(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # The limit hides the older items from the model, so the SDK compacts only the
    # latest exchange and keeps what is before it: a bounded snapshot.
    reference = SQLiteSession("s", session_settings={"limit": 1})
    expected = _chat_with_automatic_compaction(reference)
    session = AnchorlineSession("s", pipeline, session_settings={"limit": 1})
    with caplog.at_level(logging.WARNING, logger="openai-agents.openai.compaction"):
        responses = _chat_with_automatic_compaction(session)
    assert caplog.records == []  # no "Skipped automatic compaction"
    assert len(responses.calls) == len(expected.calls) == 3
    assert responses.calls == expected.calls
    everything = 100
    assert run(session.get_items(everything)) == run(reference.get_items(everything))
    assert run(session.get_items(everything)) == SUMMARY * 3
    assert len(pipeline.messages("s")) == 6  # three questions, three answers: all kept


def test_automatic_compaction_with_a_rollback_budget_of_one_item(pipeline: Pipeline) -> None:
    session = AnchorlineSession("s", pipeline)
    responses = _chat_with_automatic_compaction(session, max_rollback_items=1)
    assert len(responses.calls) == 3
    assert run(session.get_items()) == SUMMARY


def test_a_compaction_snapshot_is_not_replaced_once_the_session_changed(
    pipeline: Pipeline,
) -> None:
    session = AnchorlineSession("s", pipeline)
    run(session.add_items(ITEMS[:2]))
    snapshot = run(session._get_compaction_snapshot(1))
    assert snapshot.items == ITEMS[1:2] and snapshot.complete is False
    run(session.add_items(ITEMS[2:3]))
    assert run(snapshot.replace_suffix(0, SUMMARY)) is False
    assert run(session.get_items()) == ITEMS[:3]
    fresh = run(session._get_compaction_snapshot(5))
    assert fresh.complete is True
    assert run(fresh.replace_suffix(1, SUMMARY)) is True
    assert run(session.get_items()) == [ITEMS[0], *SUMMARY]
