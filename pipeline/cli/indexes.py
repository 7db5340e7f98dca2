"""The index's modules, as the CLI uses them: imported here only. The vector index and
Qdrant Edge are imported when a command first asks for them, not at start-up."""

from __future__ import annotations

from multiprocessing.connection import Connection

from anchorline.memory.index.embedders import (
    DEFAULT_EMBEDDER_URL,
    EMBEDDER_ENV,
    EMBEDDER_FORMS,
    EMBEDDER_URL_ENV,
    parse_embedder,
    remembered_embedder,
)

__all__ = [
    "DEFAULT_EMBEDDER_URL",
    "EMBEDDER_ENV",
    "EMBEDDER_FORMS",
    "EMBEDDER_URL_ENV",
    "index_location",
    "is_server",
    "optimize_in_child",
    "parse_embedder",
    "read_meta",
    "remembered_embedder",
]


def index_location(index: str, db: str) -> str:
    from anchorline.memory.index.vector_index import index_location

    return index_location(index, db)


def is_server(index: str) -> bool:
    from anchorline.memory.index.vector_index import is_server

    return is_server(index)


def read_meta(location: str) -> object:
    from anchorline.memory.index.edge_index import read_meta

    return read_meta(location)


def optimize_in_child(location: str, answer: Connection) -> None:
    from anchorline.memory.index.edge_index import optimize_in_child

    optimize_in_child(location, answer)
