"""Building a fresh ``PluginManager`` with the hookspecs, the defaults and the entry points."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from . import hookspecs
from .settings import Settings

ENTRY_POINT_GROUP = "anchorline"
DISABLE_AUTOLOAD_ENV = "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD"
TRACE_ENV = "ANCHORLINE_TRACE"

#: The built-in plugins, registered in this order under these names. Each entry
#: points to a factory that takes the pipeline's :class:`Settings` and returns
#: the plugin, or ``None`` when the settings leave it out (the SQLite terminal
#: when a test double is given, the indexer when no index is asked for).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("terminal", "anchorline.plugins.sqlite_terminal:create"),
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
    """Register the defaults, then the given terminal, the entry points, then ``plugins``.

    pluggy calls the most recently registered implementation first, so plugins
    given here run before the defaults; the terminal runs last in any case.
    """
    for name, target in DEFAULT_PLUGINS:
        plugin = _factory(target)(settings)
        if plugin is not None:
            pm.register(plugin, name=name)
    if settings.terminal is not None:
        pm.register(settings.terminal, name="terminal")
    if load_entrypoints and os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0"):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in plugins:
        pm.register(plugin)
