"""Building a fresh ``PluginManager`` with the hookspecs, the defaults and the entry points."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .results import Message
from .settings import Settings

ENTRY_POINT_GROUP = "anchorline"
DISABLE_AUTOLOAD_ENV = "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "ANCHORLINE_TRACE"

#: The hooks the runner calls implementation by implementation (each error
#: logged, the others still called), not through pluggy's call: a wrapper on
#: one of them would never run, so ``check_plugins`` refuses it.
CALLED_ONE_BY_ONE: tuple[str, ...] = ("after_persist", "pipeline_closing")

#: What ``plugins=`` refuses outright: values that are not a plugin by mistake.
_NOT_PLUGINS = (type(None), str, bytes, int, float, complex, bool)

#: The built-in plugins, registered in this order under these names. Each entry
#: points to a factory that takes the pipeline's :class:`Settings` and returns
#: the plugin, or ``None`` when the settings leave it out (the store terminal
#: when a test double is given, the indexer when no index is asked for).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("terminal", "anchorline.plugins.terminal:create"),
    ("text", "anchorline.plugins.text_extraction:create"),
    ("embedder", "anchorline.plugins.default_embedder:create"),
    ("indexer", "anchorline.plugins.indexer:create"),
)


def _factory(target: str) -> Callable[[Settings], Any]:
    module, _, attr = target.partition(":")
    factory: Callable[[Settings], Any] = getattr(importlib.import_module(module), attr)
    return factory


def create_plugin_manager() -> pluggy.PluginManager:
    """A new, empty manager that knows Anchorline's hooks: one per pipeline."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def register_plugins(
    pm: pluggy.PluginManager,
    settings: Settings,
    *,
    plugins: Iterable[Any] = (),
    load_entrypoints: bool = True,
) -> None:
    """Register the defaults, then the given terminal, the entry points, then ``plugins``;
    then check that every hook implementation names a known hook.

    pluggy calls the most recently registered implementation first, so plugins
    given here run before the defaults; the terminal runs last in any case.
    A plugin whose hook implementation does not fit (an unknown hook name, or
    an argument the hook does not have) raises :class:`PluginError`.
    """
    try:
        for name, target in DEFAULT_PLUGINS:
            plugin = _factory(target)(settings)
            if plugin is not None:
                pm.register(plugin, name=name)
        if settings.terminal is not None:
            if _not_a_plugin_object(settings.terminal):
                raise PluginError(_not_a_plugin("terminal", settings.terminal))
            pm.register(settings.terminal, name="terminal")
        if load_entrypoints and autoload_enabled():
            _load_entrypoints(pm)
        if isinstance(plugins, str | bytes) or not isinstance(plugins, Iterable):
            raise PluginError(
                f"plugins: must be a list of plugin objects or modules, got {plugins!r:.80}"
            )
        for position, plugin in enumerate(plugins):
            if _not_a_plugin_object(plugin):
                raise PluginError(_not_a_plugin(f"plugins[{position}]", plugin))
            pm.register(plugin, name=_free_name(pm, plugin))
    except pluggy.PluginValidationError as e:
        raise PluginError(_misfit(pm, e)) from e
    check_plugins(pm)


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    """pluggy's loading of the ``anchorline`` entry points; one that fails to load raises
    :class:`PluginError` naming it, its distribution and the way to start without them."""
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except pluggy.PluginValidationError:
        raise
    except Exception:
        # pluggy does not say which entry point failed: try the ones it did not register.
        check_entrypoints(lambda name: pm.get_plugin(name) is not None or pm.is_blocked(name))
        raise


def autoload_enabled() -> bool:
    """Whether ``Pipeline.open`` loads the entry-point plugins: unless
    ``$ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD`` is set to something else than ``0``."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")


def check_entrypoints(skip: Callable[[str], bool] = lambda name: False) -> None:
    """Load each ``anchorline`` entry point (but those ``skip`` names); the first that fails
    raises :class:`PluginError` naming it, its distribution and the way to start without
    entry-point plugins. The CLI calls it before it opens (and may create) a database."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if skip(ep.name):
            continue
        try:
            ep.load()
        except Exception as e:
            raise PluginError(_broken_entrypoint(ep, e)) from e


def _broken_entrypoint(ep: importlib.metadata.EntryPoint, error: BaseException) -> str:
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
    problem = " ".join(f"{type(error).__name__}: {error}".split())
    return (
        f"entry point {ep.name!r} ({ep.name} = {ep.value}, group {ep.group!r}) of {dist}"
        f" failed to load: {problem}; fix or uninstall it, or set"
        f" {DISABLE_AUTOLOAD_ENV}=1 to start without entry-point plugins"
    )


def _not_a_plugin_object(value: object) -> bool:
    """Whether ``value`` cannot be a plugin: a plain value, or unhashable (pluggy keys
    its plugins by the object)."""
    if isinstance(value, _NOT_PLUGINS):
        return True
    try:
        hash(value)
    except TypeError:
        return True
    return False


def _not_a_plugin(where: str, value: object) -> str:
    if isinstance(value, str):
        hint = "a plugin is an object or a module, not its name: import it and pass the module"
    else:
        hint = "a plugin is an object or a module with @hookimpl functions"
    shown = f"{value!r:.80}"
    return f"{where}: {shown} ({type(value).__name__}) is not a plugin; {hint}"


def _free_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A name for a plugin given in code: its class's (or module's) name, made unique with
    a ``-2``, ``-3``... suffix when taken."""
    base = label(plugin)
    name, n = base, 1
    while pm.get_plugin(name) is not None or pm.is_blocked(name):
        n += 1
        name = f"{base}-{n}"
    return name


def _misfit(pm: pluggy.PluginManager, error: pluggy.PluginValidationError) -> str:
    """pluggy's several-line refusal of a plugin, as one line: the hook and the argument."""
    plugin = error.plugin
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        caller = getattr(pm.hook, opts.get("specname") or attr, None)
        if caller is None or caller.spec is None:
            continue
        spec = caller.spec.argnames
        wanted = [
            p.name
            for p in inspect.signature(getattr(plugin, attr)).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        extra = [name for name in wanted if name not in spec]
        if extra:
            return (
                f"plugin {label(plugin)!r}: hook {caller.name!r} has no argument"
                f" {', '.join(map(repr, extra))}; it passes {', '.join(spec)}"
            )
    # Otherwise pluggy's own words, on one line, the plugin named once.
    problem = " ".join(str(error).split())
    named = re.match(r"Plugin ('[^']*'|\"[^\"]*\") for hook ", problem)
    if named is None:
        return f"plugin {label(plugin)!r}: {problem}"
    name = ast.literal_eval(named.group(1))
    return f"plugin {label(plugin, name)!r}: hook {problem[named.end() :]}"


def check_plugins(pm: pluggy.PluginManager) -> None:
    """Raise :class:`PluginError` if a registered plugin implements a hook that has no spec,
    or wraps a hook that is called implementation by implementation.

    A misspelt hook would otherwise never be called. An implementation meant
    for a hook that another plugin may add is declared
    ``@hookimpl(optionalhook=True)`` and passes. A wrapper on ``after_persist``
    or ``pipeline_closing`` would never run (see :data:`CALLED_ONE_BY_ONE`).
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(_unknown_hooks(pm, e.plugin)) from e
    for hook_name in CALLED_ONE_BY_ONE:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                raise PluginError(
                    f"plugin {label(impl.plugin, impl.plugin_name)!r}: hook {hook_name!r} is"
                    f" called for each plugin in turn, so a {kind} implementation never runs;"
                    " drop the wrapper (the implementation gets every argument it needs)"
                )
    for plugin in pm.get_plugins():
        if inspect.isclass(plugin) and _needs_instance(pm, plugin):
            raise PluginError(
                f"plugin {label(plugin, pm.get_name(plugin))!r} is the class {plugin.__name__},"
                f" whose hooks are methods: register an instance ({plugin.__name__}()), or a"
                " module-level factory that returns one"
            )


def _needs_instance(pm: pluggy.PluginManager, cls: type) -> bool:
    """Whether a class registered as a plugin has hook methods that take ``self``."""
    for attr in dir(cls):
        if pm.parse_hookimpl_opts(cls, attr) is None:
            continue
        if isinstance(inspect.getattr_static(cls, attr), staticmethod | classmethod):
            continue
        parameters = list(inspect.signature(getattr(cls, attr)).parameters)
        if parameters[:1] == ["self"]:
            return True
    return False


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> str:
    known = sorted(
        name
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.has_spec()
    )
    unknown = sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or ()
        if not caller.has_spec()
        and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls())
    )
    problems = []
    for hook in unknown:
        close = difflib.get_close_matches(hook, known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"the hooks are {', '.join(known)}"
        problems.append(f"unknown hook {hook!r} ({hint})")
    return (
        f"plugin {label(plugin, pm.get_name(plugin))!r} implements {' and '.join(problems)};"
        " rename it, or mark it @hookimpl(optionalhook=True) if another plugin adds that hook"
    )


def label(plugin: object, name: str | None = None) -> str:
    """How messages name ``plugin``: its registered name, or its class when pluggy made one up."""
    if name and name != str(id(plugin)):
        return name
    if isinstance(plugin, ModuleType) or inspect.isclass(plugin):
        return plugin.__name__
    return type(plugin).__name__


def is_builtin(plugin: object) -> bool:
    """Whether ``plugin`` is one of Anchorline's own, whose answers are trusted."""
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    return module == "anchorline" or module.startswith("anchorline.")


def culprits(hook: pluggy.HookCaller) -> str:
    """Who to name when ``hook`` answered with something wrong: "plugin 'x'", or the candidates.

    pluggy does not say which implementation a ``firstresult`` answer came from,
    and recording it would cost every call. Only a wrong answer needs a name, so
    it is worked out then: Anchorline's own implementations are tested and
    trusted, which leaves the others (a wrapper may have replaced the answer).
    """
    impls = list(reversed(hook.get_hookimpls()))  # in call order
    suspects = [i for i in impls if not is_builtin(i.plugin)] or impls
    names = list(dict.fromkeys(label(i.plugin, i.plugin_name) for i in suspects))
    if len(names) == 1:
        return f"plugin {names[0]!r}"
    return f"one of the plugins {', '.join(repr(n) for n in names)}"


def check_messages(hook: pluggy.HookCaller, found: object) -> list[Message]:
    """``found`` if it is a list of messages; otherwise :class:`PluginError` naming the plugin."""
    if found is None:
        raise PluginError(f"{hook.name}: no plugin answered (is a terminal registered?)")
    if not isinstance(found, list) or not all(isinstance(m, Message) for m in found):
        got = type(found).__name__
        if isinstance(found, list):
            odd = next(m for m in found if not isinstance(m, Message))
            got = f"a list holding a {type(odd).__name__}"
        raise PluginError(f"{hook.name}: {culprits(hook)} returned {got}, expected list[Message]")
    return found
