"""Pydantic AI histories in a pipeline, against the real package and its TestModel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.test import TestModel

from anchorline import Add, Pipeline, hookimpl
from anchorline.integrations.pydantic_ai import load_history, save_history


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
