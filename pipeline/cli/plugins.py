"""``anchorline plugins``: the plugins and the order their hooks run in."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from anchorline.memory.stores import masked_text

from ..runner import Pipeline
from .common import Needs, add_command
from .opening import args_index_location
from .output import out, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    add_command(sub, "plugins", run, Needs(index="if-present", missing_ok=True))


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """List the registered plugins and, per hook, the order its implementations run in."""
    pm = pipeline.plugin_manager
    table = Table(title="plugins")
    table.add_column("name")
    table.add_column("plugin", overflow="fold")
    for name, plugin in pm.list_name_plugin():
        table.add_row(Text(visible(str(name))), Text(masked_text(visible(repr(plugin)))))
    out.print(table)
    hooks = Table(title="hooks (implementations in call order)")
    hooks.add_column("hook")
    hooks.add_column("implementations", overflow="fold")
    for hook_name in sorted(pm.hook.__dict__):
        caller = getattr(pm.hook, hook_name)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            flags = [f for f in _IMPL_FLAGS if getattr(impl, f)]
            impls.append(visible(impl.plugin_name) + (f" ({', '.join(flags)})" if flags else ""))
        hooks.add_row(Text(hook_name), Text(" → ".join(impls) or "-"))
    out.print(hooks)
    if args.no_database:
        out.print(Text(visible(f"(no database at {os.path.abspath(args.db)}: the plugins a new"
                               " one would have)")))  # fmt: skip
    elif pipeline.settings.index is None and args.index != "none":
        location = visible(os.path.abspath(args_index_location(args)))
        out.print(Text(f"no indexer: no index at {location} ('anchorline reindex' builds it)"))
    return 0


_IMPL_FLAGS = ("wrapper", "hookwrapper", "tryfirst", "trylast")
