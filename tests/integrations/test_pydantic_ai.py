"""Pydantic AI histories in a pipeline, against the real package and its TestModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.test import TestModel

from anchorline import Add, Pipeline, Reserve, UpdateContent, hookimpl
from anchorline.integrations.pydantic_ai import compact_history, load_history, save_history


def _agent() -> Agent[None, str]:
    agent = Agent(TestModel(), system_prompt="Be brief.")

    @agent.tool_plain
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    return agent


def test_a_stored_history_reads_back_equal(pipeline: Pipeline) -> None:
    result = _agent().run_sync("What is 2 + 3?")
    save_history(pipeline, "c1", result.new_messages())
    assert load_history(pipeline, "c1") == result.all_messages()
    roles = [m.role for m in pipeline.messages("c1")]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert load_history(pipeline, "unknown") == []


def test_the_text_of_a_multimodal_prompt_is_stored_for_search(pipeline: Pipeline) -> None:
    result = _agent().run_sync(["Describe the chart", "and the legend"])
    save_history(pipeline, "c1", result.new_messages())
    prompt = pipeline.messages("c1")[0]
    assert prompt.role == "user" and isinstance(prompt.content, list)
    assert prompt.content[0]["text"].endswith("Describe the chart\nand the legend")
    assert load_history(pipeline, "c1") == result.all_messages()


def test_a_run_resumes_a_stored_conversation_in_a_new_pipeline(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    agent = _agent()
    with Pipeline.open(db, load_entrypoints=False) as pipeline:
        first = agent.run_sync("What is 2 + 3?")
        save_history(pipeline, "c1", first.new_messages())
    with Pipeline.open(db, load_entrypoints=False) as pipeline:
        history = load_history(pipeline, "c1")
        second = agent.run_sync("And now?", message_history=history)
        save_history(pipeline, "c1", second.new_messages())
        assert second.all_messages()[: len(history)] == first.all_messages()
        assert load_history(pipeline, "c1") == second.all_messages()
        prompts = [
            part.content
            for message in load_history(pipeline, "c1")
            for part in message.parts
            if isinstance(part, UserPromptPart)
        ]
    assert prompts == ["What is 2 + 3?", "And now?"]


class _Watcher:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def after_persist(self, op: Any, result: Any, context: Any) -> None:
        self.kinds.append(op.kind)


def test_plugins_see_every_saved_message(pipeline: Pipeline) -> None:
    watcher = _Watcher()
    pipeline.plugin_manager.register(watcher)
    result = _agent().run_sync("hi")
    save_history(pipeline, "c1", result.new_messages())
    assert watcher.kinds == ["add"] * len(result.new_messages())


def test_messages_written_through_the_pipeline_read_as_prompts_and_answers(
    pipeline: Pipeline,
) -> None:
    pipeline.persist(Add(conversation_id="c1", role="user", content="typed elsewhere"))
    pipeline.persist(Add(conversation_id="c1", role="assistant", content="answered"))
    [request, response] = load_history(pipeline, "c1")
    assert isinstance(request, ModelRequest) and isinstance(response, ModelResponse)
    assert [p.content for p in request.parts] == ["typed elsewhere"]
    assert response.parts == [TextPart(content="answered")]
    result = _agent().run_sync("go on", message_history=[request, response])
    assert result.output


def test_an_answer_still_streaming_is_not_history_yet(pipeline: Pipeline) -> None:
    pipeline.persist(Add(conversation_id="c1", role="user", content="hi"))
    streaming = pipeline.persist(Reserve(conversation_id="c1", role="assistant")).message
    pipeline.persist(UpdateContent(message_id=streaming.id, content="Hel", final=False))
    [request] = load_history(pipeline, "c1")
    assert isinstance(request, ModelRequest)


def test_after_a_compaction_the_history_is_the_summary_then_what_it_keeps(
    pipeline: Pipeline,
) -> None:
    agent = _agent()
    first = agent.run_sync("What is 2 + 3?")
    save_history(pipeline, "c1", first.new_messages())
    second = agent.run_sync("And 4 + 4?", message_history=load_history(pipeline, "c1"))
    save_history(pipeline, "c1", second.new_messages())
    kept = pipeline.messages("c1")[len(first.new_messages())]
    compact_history(pipeline, "c1", "The user asked for 2 + 3.", kept.seq)
    history = load_history(pipeline, "c1")
    [part] = history[0].parts
    assert isinstance(part, SystemPromptPart) and part.content == "The user asked for 2 + 3."
    assert history[1:] == second.new_messages()
    assert len(pipeline.messages("c1")) == len(second.all_messages())  # all kept in the log
    third = agent.run_sync("And now?", message_history=history)
    assert third.output


def test_a_summary_of_model_messages_loads_back_as_they_were(pipeline: Pipeline) -> None:
    result = _agent().run_sync("What is 2 + 3?")
    save_history(pipeline, "c1", result.new_messages())
    summary = [ModelRequest(parts=[UserPromptPart(content="Sum two numbers.")])]
    after = pipeline.messages("c1")[-1].seq + 1
    compact_history(pipeline, "c1", summary, after)
    assert load_history(pipeline, "c1") == summary


def test_a_compaction_never_keeps_a_tool_return_without_its_call(pipeline: Pipeline) -> None:
    agent = _agent()
    result = agent.run_sync("What is 2 + 3?")
    save_history(pipeline, "c1", result.new_messages())
    stored = pipeline.messages("c1")
    [call_at] = [
        i for i, m in enumerate(result.new_messages()) if isinstance(m.parts[0], ToolCallPart)
    ]
    returned = stored[call_at + 1]
    assert isinstance(result.new_messages()[call_at + 1].parts[0], ToolReturnPart)
    compaction = compact_history(pipeline, "c1", "The user asked for a sum.", returned.seq)
    assert compaction.message.metadata["first_kept_seq"] == stored[call_at].seq
    history = load_history(pipeline, "c1")
    assert history[1:] == result.new_messages()[call_at:]
    assert agent.run_sync("And now?", message_history=history).output


def test_plain_tool_and_block_messages_read_as_model_text(pipeline: Pipeline) -> None:
    blocks = [{"type": "text", "text": "hi"}]
    pipeline.persist(Add(conversation_id="c1", role="user", content=blocks))
    pipeline.persist(Add(conversation_id="c1", role="tool", content="42"))
    [request, response] = load_history(pipeline, "c1")
    assert isinstance(request, ModelRequest) and request.parts[0].content == "hi"
    assert isinstance(response, ModelResponse) and response.parts == [TextPart(content="42")]
