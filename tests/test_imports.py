"""The installed package imports one way: the contract, then the stores, then the hooks,
the plugins, the runner, and what sits on the runner (the CLI, asyncio, integrations).

Every import counts: at the top of a module, inside a function, or under
``TYPE_CHECKING``; the graph is read from the installed package's files, so it is what
a user gets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import anchorline

# Not resolved: an editable install links each file, not the folders.
PACKAGE = Path(anchorline.__file__).parent

#: The layers, lowest first, by the first part of the module's name under
#: ``anchorline`` ("" is the package itself). A module imports its own layer and those
#: below it, never one above.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "contract",
        frozenset(
            {"errors", "ops", "results", "ids", "limits", "embedding", "parsing", "op_schema"}
        ),
    ),
    ("memory", frozenset({"memory"})),
    ("hooks", frozenset({"hookspecs", "context", "settings"})),
    ("plugins", frozenset({"plugins"})),
    (
        "runner",
        frozenset(
            {"runner", "plugin_manager", "compaction", "streaming", "sweeping", "changefeed"}
        ),
    ),
    (
        "on the runner",
        frozenset(
            {
                "",
                "cli",
                "aio",
                "integrations",
                "bench",
                "pytest_plugin",
            }
        ),
    ),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(["anchorline", *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # ``from X import a``: the module X.a if there is one, else X.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # A name inside a module, or a module outside the package, is dropped.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    assert len(modules) > 50, modules
    return {name: set(_imports(name, path, modules)) for name, path in modules.items()}


def _layer(module: str) -> int:
    head = module.removeprefix("anchorline").lstrip(".").partition(".")[0]
    for number, (_, heads) in enumerate(LAYERS):
        if head in heads:
            return number
    raise AssertionError(f"{module} is in no layer: add its name to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_is_in_an_import_circle() -> None:
    graph = _graph()
    circles = _cycles(graph)
    shown = [
        "; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(shown)


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {other} ({LAYERS[_layer(other)][0]})"
        for module, imported in sorted(_graph().items())
        for other in sorted(imported)
        if _layer(other) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_graph_sees_type_checking_and_function_level_imports() -> None:
    graph = _graph()
    assert "anchorline.results" in graph["anchorline.context"]  # under TYPE_CHECKING
    assert "anchorline.memory.sqlite.store" in graph["anchorline.memory.stores"]  # in a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
