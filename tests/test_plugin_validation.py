"""Plugins fail loud: unknown hooks fail ``Pipeline.open``, wrong answers name the plugin."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest

from anchorline import (
    Add,
    AsyncPipeline,
    Context,
    PersistOp,
    PersistResult,
    Pipeline,
    PluginError,
    hookimpl,
)
from anchorline.plugins.in_memory import InMemoryTerminal
from anchorline.settings import Settings


class Misspelt:
    @hookimpl
    def persits(self, op: PersistOp, context: Context) -> None:
        raise AssertionError("never called")


class Guessed:
    @hookimpl
    def embed_texts(self, texts: list[str]) -> None:
        raise AssertionError("never called")


class Invented:
    @hookimpl
    def on_anything(self) -> None:
        raise AssertionError("never called")


def open_files(path: str) -> list[str]:
    """This process's open file descriptors on the database (and its -wal, -shm)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(path):
            found.append(target)
    return found


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (Misspelt(), "'Misspelt' implements unknown hook 'persits' (did you mean 'persist'?)"),
        (Guessed(), "'Guessed' implements unknown hook 'embed_texts' (did you mean 'embedder'?)"),
        (
            Invented(),
            "'Invented' implements unknown hook 'on_anything' (the hooks are after_persist,",
        ),
    ],
    ids=["persits", "embed_texts", "on_anything"],
)
def test_an_unknown_hook_fails_open_and_names_the_closest_real_one(
    db_path: str, plugin: object, expected: str
) -> None:
    with pytest.raises(PluginError) as info:
        Pipeline.open(db_path, plugins=[plugin], load_entrypoints=False)
    assert str(info.value).startswith(f"plugin {expected}")
    assert "optionalhook=True" in str(info.value)  # what to do if it is meant
    assert isinstance(info.value, TypeError)


def test_every_unknown_hook_of_the_plugin_is_named() -> None:
    class Two:
        @hookimpl
        def persits(self) -> None: ...

        @hookimpl
        def get_mesage(self) -> None: ...

    with pytest.raises(PluginError) as info:
        Pipeline.open(":memory:", plugins=[Two()], load_entrypoints=False)
    message = str(info.value)
    assert "'get_mesage' (did you mean 'get_message'?)" in message
    assert "'persits' (did you mean 'persist'?)" in message


class MisspeltTerminal(InMemoryTerminal):
    @hookimpl(trylast=True)
    def list_mesages(self) -> None: ...


def misspelt_default(settings: Settings) -> object:
    """A factory in the shape of ``DEFAULT_PLUGINS``' entries."""
    return Misspelt()


@pytest.fixture
def misspelt_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A plugin installed the way pip would, whose only hook is misspelt."""
    (tmp_path / "misspelt_plugin.py").write_text(
        textwrap.dedent(
            """
            from anchorline import hookimpl

            @hookimpl
            def after_persits(op, result, context):
                pass
            """
        )
    )
    dist = tmp_path / "misspelt_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: misspelt-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[anchorline]\nmisspelt = misspelt_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD")
    yield
    sys.modules.pop("misspelt_plugin", None)


def test_an_entry_point_plugin_with_an_unknown_hook_fails_open(
    misspelt_entry_point: None,
) -> None:
    with pytest.raises(
        PluginError, match=r"plugin 'misspelt' .* 'after_persits' .*'after_persist'"
    ):
        Pipeline.open(":memory:")


def test_a_replacement_terminal_with_an_unknown_hook_fails_open() -> None:
    with pytest.raises(PluginError, match=r"plugin 'terminal' .* 'list_mesages'"):
        Pipeline.open(":memory:", terminal=MisspeltTerminal(), load_entrypoints=False)


def test_a_default_plugin_with_an_unknown_hook_fails_open(monkeypatch: pytest.MonkeyPatch) -> None:
    import anchorline.plugin_manager as plugin_manager

    target = f"{__name__}:misspelt_default"
    monkeypatch.setattr(
        plugin_manager, "DEFAULT_PLUGINS", (*plugin_manager.DEFAULT_PLUGINS, ("extra", target))
    )
    with pytest.raises(PluginError, match=r"plugin 'extra' implements unknown hook 'persits'"):
        Pipeline.open(":memory:", load_entrypoints=False)


def test_a_hook_argument_the_spec_lacks_is_a_plugin_error_too() -> None:
    class WrongArgument:
        @hookimpl
        def persist(self, op: PersistOp, ctx: Context) -> None: ...

    with pytest.raises(
        PluginError,
        match=(
            r"^plugin 'WrongArgument': hook 'persist' has no argument 'ctx';"
            r" it passes op, context$"
        ),
    ):
        Pipeline.open(":memory:", plugins=[WrongArgument()], load_entrypoints=False)


def test_a_wrapper_that_is_not_a_generator_is_a_plugin_error_in_one_line() -> None:
    class NotAGenerator:
        @hookimpl(wrapper=True)
        def persist(self, op: PersistOp, context: Context) -> None: ...

    with pytest.raises(PluginError) as info:
        Pipeline.open(":memory:", plugins=[NotAGenerator()], load_entrypoints=False)
    message = str(info.value)
    assert message.startswith("plugin 'NotAGenerator': hook 'persist'")
    assert "not a generator function" in message and "\n" not in message


def test_a_hook_of_another_plugin_opens_only_when_marked_optional(db_path: str) -> None:
    class Spec:
        @pluggy.HookspecMarker("anchorline")
        def summarise(self, conversation_id: str) -> str:  # type: ignore[empty-body]
            """A hook that another plugin adds once it is loaded."""

    class Unmarked:
        @hookimpl
        def summarise(self, conversation_id: str) -> str:
            return f"summary of {conversation_id}"

    class Extension:
        @hookimpl(optionalhook=True)
        def summarise(self, conversation_id: str) -> str:
            return f"summary of {conversation_id}"

    with pytest.raises(PluginError, match="unknown hook 'summarise'"):
        Pipeline.open(db_path, plugins=[Unmarked()], load_entrypoints=False)
    with Pipeline.open(db_path, plugins=[Extension()], load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        pipeline.plugin_manager.add_hookspecs(Spec)
        assert pipeline.plugin_manager.hook.summarise(conversation_id="c") == ["summary of c"]


def test_a_failed_open_leaves_no_file_open_and_no_thread_running(db_path: str) -> None:
    before = set(threading.enumerate())
    with pytest.raises(PluginError, match="persits"):
        Pipeline.open(
            db_path,
            plugins=[Misspelt()],
            index=":memory:",
            index_sync=False,
            load_entrypoints=False,
        )
    assert open_files(db_path) == []
    assert set(threading.enumerate()) <= before
    with Pipeline.open(db_path, load_entrypoints=False) as pipeline:  # nothing holds the file
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))


def test_a_failed_async_open_leaves_no_writer_thread(db_path: str) -> None:
    async def main() -> None:
        with pytest.raises(PluginError, match="persits"):
            await AsyncPipeline.open(db_path, plugins=[Misspelt()], load_entrypoints=False)

    asyncio.run(main())
    for thread in threading.enumerate():
        if thread.name.startswith("anchorline-writer"):
            thread.join(timeout=10)
            assert not thread.is_alive(), "the writer thread of a failed open is still running"
    assert open_files(db_path) == []


# --- answers of the wrong type (on every store: tests/contract/test_plugin_answers.py) ---


def test_a_wrapper_replacing_the_result_is_named_and_nothing_is_written(db_path: str) -> None:
    class Replacer:
        @hookimpl(wrapper=True)
        def persist(self) -> Generator[None, PersistResult, object]:
            yield
            return "done"

    with Pipeline.open(db_path, plugins=[Replacer()], load_entrypoints=False) as pipeline:
        with pytest.raises(PluginError, match="persist: plugin 'Replacer' returned str"):
            pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
        assert pipeline.messages("c") == []  # the terminal's write was rolled back


def test_a_plugin_class_instead_of_an_instance_fails_open() -> None:
    class Audit:
        @hookimpl
        def after_persist(self, op: PersistOp, result: object, context: object) -> None:
            pass

    refused = r"is the class Audit, .* register an instance \(Audit\(\)\)"
    with pytest.raises(PluginError, match=refused):
        Pipeline.open(":memory:", plugins=[Audit], load_entrypoints=False)
    Pipeline.open(":memory:", plugins=[Audit()], load_entrypoints=False).close()


class Counting:
    """An observer that fails on every write (an injected fault)."""

    @hookimpl
    def after_persist(self, op: PersistOp, result: object, context: object) -> None:
        raise RuntimeError("observer gremlin")


def test_plugins_given_in_code_are_named_after_their_class_in_logs_and_listings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import anchorline.plugins.text_extraction as module_plugin

    plugins = [Counting(), Counting(), module_plugin]
    with Pipeline.open(":memory:", plugins=plugins, load_entrypoints=False) as pipeline:
        names = [name for name, _ in pipeline.plugin_manager.list_name_plugin()]
        assert names[-3:] == ["Counting", "Counting-2", "anchorline.plugins.text_extraction"]
        assert pipeline.plugin_manager.get_plugin("Counting-2") is plugins[1]
        pipeline.persist(Add(conversation_id="c", role="user", content="hi"))
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failed == [
        "after_persist in plugin 'Counting-2' failed",
        "after_persist in plugin 'Counting' failed",
    ]


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (None, r"^plugins\[1\]: None \(NoneType\) is not a plugin; "),
        ("my_pkg.plugin", r"^plugins\[1\]: 'my_pkg.plugin' \(str\) is not a plugin; .* import it"),
    ],
    ids=["None", "a module's name"],
)
def test_a_value_that_is_not_a_plugin_is_refused_by_position(value: object, refused: str) -> None:
    with pytest.raises(PluginError, match=refused):
        Pipeline.open(":memory:", plugins=[Counting(), value], load_entrypoints=False)


@pytest.mark.parametrize("hook", ["after_persist", "pipeline_closing"])
@pytest.mark.parametrize("kind", ["wrapper", "hookwrapper"])
def test_a_wrapper_on_a_hook_called_plugin_by_plugin_fails_open(
    db_path: str, hook: str, kind: str
) -> None:
    def wrapping(*args: object, **kwargs: object) -> Generator[None, object, object]:
        return (yield)

    wrapping.__name__ = hook
    plugin = type("Timing", (), {hook: staticmethod(hookimpl(**{kind: True})(wrapping))})()
    with pytest.raises(PluginError) as info:
        Pipeline.open(db_path, plugins=[plugin], load_entrypoints=False)
    message = str(info.value)
    assert message.startswith(f"plugin 'Timing': hook {hook!r} is called for each plugin in turn")
    assert f"a {kind}=True implementation never runs" in message
    assert open_files(db_path) == []
