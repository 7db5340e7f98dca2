"""The vector index: a folder on this machine (Qdrant Edge), in memory, or a Qdrant server.

A folder is a Qdrant Edge shard, which one process may open at a time (see
:mod:`anchorline.memory.index.edge_index`): it is held only while it is being used, a
process opens it to drain the outbox or to search, and one thread per process
lets it go once it has been idle for ``linger`` seconds. A read (search, count,
scan) of a folder another process holds is answered by that process. ``":memory:"`` and
server URLs go through qdrant-client.

Every error of the index (HTTP, protocol, a reply that is not Qdrant's, a
folder that cannot be read or made) leaves this module as
:class:`IndexUnavailable` naming the folder or URL, with the original as its
``__cause__``; a folder held by another process as :class:`IndexBusy`; an index
built by another embedder as :class:`ConfigurationError`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from anchorline.errors import AnchorlineError, ConfigurationError, IndexBusy, IndexUnavailable

from .edge_index import (
    ASK_TIMEOUT,
    KEYWORD_FIELDS,
    EdgeFolder,
    EdgeOps,
    HolderGone,
    HolderOps,
    IndexMeta,
    mismatch_error,
    read_meta,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

T = TypeVar("T")

log = logging.getLogger("anchorline.index")

POINT_NAMESPACE = uuid.UUID("6f1c8f5e-2d4b-4a7e-9a53-3b1e0c9d7a21")


def point_id(message_id: str) -> str:
    """The Qdrant point id of a message: a UUIDv5 of its id, the same everywhere."""
    return str(uuid.uuid5(POINT_NAMESPACE, message_id))


@attrs.frozen
class Point:
    message_id: str
    vector: list[float]
    payload: dict[str, Any]


def is_server(location: str) -> bool:
    """Whether ``location`` is a Qdrant server URL."""
    return location.lower().startswith(("http://", "https://"))


def index_location(index: str, db_path: str) -> str:
    """Where a checked ``index=`` setting points: ``":memory:"``, a URL, or a folder.

    ``"local"`` is the folder ``<database>.index`` next to the database file
    (in memory for a ``":memory:"`` database).
    """
    if index == "local":
        if db_path == ":memory:":
            return ":memory:"
        if "://" in db_path:
            raise ConfigurationError(
                "index: 'local' is a folder next to a database file, and a database server has"
                " none; give a Qdrant server URL (or a folder path, for the processes of one"
                " machine)"
            )
        return str(Path(db_path).with_name(Path(db_path).name + ".index"))
    if "://" in db_path and "://" not in index and index != ":memory:":
        log.warning(
            "index %s: an embedded index folder serves the processes of one machine; with a"
            " database server, agents on other machines need a Qdrant server URL",
            index,
        )
    return index


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def server_error(location: str, what: str, error: Exception) -> IndexUnavailable:
    """What a qdrant-client error from a server means, as one line naming the URL."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    cause: BaseException = error
    if isinstance(error, ResponseHandlingException):
        cause = error.source
    if isinstance(cause, httpx.NetworkError | httpx.TimeoutException | OSError):
        reason = _one_line(str(cause) or type(cause).__name__)
        return IndexUnavailable(
            f"{what}: could not reach the Qdrant server at {location} ({reason});"
            " check that it is running and that the URL is right"
        )
    if isinstance(error, UnexpectedResponse):
        status = f"{error.status_code} {error.reason_phrase}".strip()
        if error.status_code in (401, 403):
            return IndexUnavailable(
                f"{what}: the Qdrant server at {location} refused the request ({status});"
                " check the API key (index_api_key or $ANCHORLINE_QDRANT_API_KEY)"
            )
        body = _one_line(error.content.decode("utf-8", "replace"), 120)
        return IndexUnavailable(
            f"{what}: the Qdrant server at {location} answered {status}"
            + (f" ({body})" if body else "")
        )
    return IndexUnavailable(
        f"{what}: the server at {location} did not answer as Qdrant does"
        f" ({type(cause).__name__}: {_one_line(str(cause), 120)}); is it a Qdrant server?"
    )


class IndexOps(Protocol):
    """The operations of one open index, by point id: what each mode implements."""

    def upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> None: ...
    def set_payload(self, pid: str, payload: dict[str, Any]) -> bool: ...
    def delete(self, pids: list[str]) -> None: ...
    def search(
        self, vector: list[float], conversation_id: str | None, limit: int
    ) -> list[tuple[dict[str, Any], float]]: ...
    def count(self) -> int: ...
    def existing(self, pids: list[str]) -> set[str]: ...
    def payloads(self, fields: list[str] | None = None) -> Iterator[dict[str, Any]]: ...
    def payload(self, pid: str) -> dict[str, Any] | None: ...
    def flush(self) -> None: ...


class _ClientOps:
    """The operations on one collection of qdrant-client (in memory, or a server)."""

    def __init__(self, client: QdrantClient, collection: str) -> None:
        self.client = client
        self.collection = collection

    def upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        from qdrant_client import models

        structs = [models.PointStruct(id=pid, vector=v, payload=p) for pid, v, p in points]
        self.client.upsert(self.collection, points=structs, wait=True)

    def set_payload(self, pid: str, payload: dict[str, Any]) -> bool:
        if not self.client.retrieve(self.collection, [pid], with_payload=False):
            return False
        self.client.overwrite_payload(self.collection, payload=payload, points=[pid], wait=True)
        return True

    def delete(self, pids: list[str]) -> None:
        from qdrant_client import models

        selector = models.PointIdsList(points=list(pids))
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def search(
        self, vector: list[float], conversation_id: str | None, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        from qdrant_client import models

        query_filter = None
        if conversation_id is not None:
            query_filter = models.Filter(
                must=[
                    models.FieldCondition(
                        key="conversation_id", match=models.MatchValue(value=conversation_id)
                    )
                ]
            )
        found = self.client.query_points(
            self.collection, query=vector, query_filter=query_filter, limit=limit,
            with_payload=True,
        ).points  # fmt: skip
        return [(p.payload, p.score) for p in found if p.payload]

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def existing(self, pids: list[str]) -> set[str]:
        records = self.client.retrieve(self.collection, list(pids), with_payload=False)
        return {str(r.id) for r in records}

    def payloads(self, fields: list[str] | None = None) -> Iterator[dict[str, Any]]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, limit=1000, offset=offset, with_payload=fields or True
            )
            yield from (p.payload for p in points if p.payload)
            if offset is None:
                return

    def payload(self, pid: str) -> dict[str, Any] | None:
        found = self.client.retrieve(self.collection, [pid], with_payload=True)
        return dict(found[0].payload or {}) if found else None

    def flush(self) -> None:
        pass  # every write waited for (wait=True)


class VectorIndex:
    """The message vectors of one embedder, in any of the three modes.

    ``location`` is ``":memory:"`` or a server URL (qdrant-client: a
    collection named after the embedder, created on first use with its
    dimension and cosine distance), or a folder: a Qdrant Edge shard (see
    :mod:`anchorline.memory.index.edge_index`), which records the embedder it was
    built with (and ``spec``, the setting that names the embedder, if any). ``linger`` is
    how long a folder stays held once idle; ``wait``
    how long to wait for a folder held by another process.

    ``on_open(created)`` is called each time the index is first used after it
    was opened (a folder is opened again after each idle release); ``created``
    says the index did not exist, so every point is gone. The indexer uses it
    to re-queue what the index lacks.
    """

    def __init__(
        self,
        location: str,
        *,
        model: str,
        dimension: int,
        api_key: str | None = None,
        spec: str | None = None,
        linger: float = 2.0,
        wait: float = 10.0,
        on_open: Callable[[bool], None] | None = None,
    ) -> None:
        self.location = location
        self.dimension = dimension
        self.meta = IndexMeta(model, dimension, spec)
        self.collection = "anchorline_" + re.sub(r"[^A-Za-z0-9_-]", "_", model)
        self.linger = linger
        self.wait = wait
        self.on_open = on_open
        self._api_key = api_key
        self._client: QdrantClient | None = None
        self._folder: EdgeFolder | None = None
        self._ready = False
        self._lock = threading.RLock()
        if location != ":memory:" and not is_server(location):
            self._folder = EdgeFolder.get(location)

    def __repr__(self) -> str:
        if self._folder is not None:
            return f"VectorIndex({self.location!r}, embedder={self.meta.embedder!r})"
        return f"VectorIndex({self.location!r}, collection={self.collection!r})"

    @property
    def embedded(self) -> bool:
        """Whether the index is a folder on this machine (Qdrant Edge)."""
        return self._folder is not None

    def built_with(self) -> IndexMeta | None:
        """The embedder an index folder records, without opening it (``None`` elsewhere)."""
        return read_meta(self.location) if self._folder is not None else None

    @contextmanager
    def session(
        self, wait: float | None = None, what: str = "index", *, check: bool = True
    ) -> Iterator[IndexOps]:
        """The index for a batch of work; a folder is held meanwhile.

        A folder held by another process is waited for up to ``wait`` seconds
        (default ``self.wait``), then :class:`IndexBusy`. An index built by
        another embedder raises :class:`ConfigurationError` (unless not
        ``check``). Other errors inside the block come out as
        :class:`IndexUnavailable`; ``what`` names the work in their message.
        """
        folder = self._folder
        if folder is None:
            with self._lock:
                with self._translated(what):
                    client = self._connect()
                    created = None if self._ready else self._ensure_collection(client, check)
                    self._ready = True
                if created is not None and self.on_open is not None:
                    self.on_open(created)
                with self._translated(what):
                    yield _ClientOps(client, self.collection)
            return
        with folder.lock:
            folder.users += 1
            try:
                with self._translated(what):
                    shard, created = folder.open(
                        self.wait if wait is None else wait, self.meta, check=check
                    )
                # Unchecked (to recreate it for another embedder), it is not checked
                # against the database either: the next checked session is.
                if check and id(self) not in folder.ready:
                    folder.ready.add(id(self))
                    if self.on_open is not None:
                        self.on_open(created)
                with self._translated(what):
                    yield EdgeOps(shard, folder.path)
            finally:
                folder.users -= 1
                if folder.users == 0:
                    folder.release_at = time.monotonic() + self.linger

    def _connect(self) -> QdrantClient:
        if self._client is None:
            from qdrant_client import QdrantClient

            self._client = (
                QdrantClient(":memory:")
                if self.location == ":memory:"
                # No version probe at construction: it is a network call
                # that would stall or warn while the server is down.
                else QdrantClient(
                    url=self.location, api_key=self._api_key, check_compatibility=False
                )
            )
        return self._client

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except AnchorlineError:
            raise
        except Exception as e:
            raise self._error(what, e) from e

    def _error(self, what: str, error: Exception) -> IndexUnavailable:
        folder = self._folder
        if folder is not None:
            return IndexUnavailable(
                f"{what}: index folder {folder.path} failed"
                f" ({type(error).__name__}: {_one_line(str(error))})"
            )
        if self.location == ":memory:":
            return IndexUnavailable(
                f"{what}: the in-memory index failed"
                f" ({type(error).__name__}: {_one_line(str(error))})"
            )
        from qdrant_client.http.exceptions import UnexpectedResponse

        if isinstance(error, UnexpectedResponse) and error.status_code == 404:
            self._ready = False  # the collection may be gone: check (and recreate) next time
        return server_error(self.location, what, error)

    def _call(self, what: str, fn: Callable[[IndexOps], T]) -> T:
        with self.session(what=what) as ops:
            return fn(ops)

    def _read(self, what: str, fn: Callable[[IndexOps], T]) -> T:
        """Run a read: on the index, or, for a folder another process holds, by that
        process. Only when it neither lets go nor answers for ``self.wait`` seconds
        is the folder busy (:class:`IndexBusy`)."""
        folder = self._folder
        if folder is None:
            return self._call(what, fn)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                with self.session(wait=0.0, what=what) as ops:
                    return fn(ops)
            except IndexBusy:
                pass  # held by another process: ask it
            built = read_meta(folder.path)
            if built is not None and built != self.meta:
                raise mismatch_error(folder.path, built, self.meta)
            remaining = deadline - time.monotonic()
            try:
                with self._translated(what):
                    timeout = max(0.5, min(ASK_TIMEOUT, remaining))
                    return fn(HolderOps(folder.path, self.meta, timeout))
            except HolderGone:
                if remaining <= 0:
                    raise folder.busy() from None
            time.sleep(0.05)

    def _ensure_collection(self, client: QdrantClient, check: bool = True) -> bool:
        """Create the collection unless it exists; whether it was created.

        A collection of another dimension (the embedder's name is the
        collection's) raises :class:`ConfigurationError` with ``check``.
        """
        from qdrant_client import models

        if client.collection_exists(self.collection):
            if check:
                vectors = client.get_collection(self.collection).config.params.vectors
                size = getattr(vectors, "size", None)
                if isinstance(size, int) and size != self.dimension:
                    raise ConfigurationError(
                        f"index {self.location}: collection {self.collection} holds vectors of"
                        f" dimension {size}, and this pipeline's embedder"
                        f" {self.meta.describe()} makes vectors of another: run"
                        " 'anchorline reindex' to rebuild it"
                    )
            return False
        client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(
                size=self.dimension, distance=models.Distance.COSINE
            ),
        )
        if self.location != ":memory:":
            for field in KEYWORD_FIELDS:
                client.create_payload_index(
                    self.collection, field, models.PayloadSchemaType.KEYWORD
                )
        return True

    def release_if_idle(self, force: bool = False) -> None:
        """Let another process have the folder (at once with ``force``)."""
        folder = self._folder
        if folder is None:
            return
        if not force:
            folder.release_if_idle()
            return
        with folder.lock:
            folder.release()

    # --- operations ---------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        if not points:
            return
        rows = [(point_id(p.message_id), p.vector, p.payload) for p in points]
        self._call("upsert", lambda ops: ops.upsert(rows))

    def set_payload(self, message_id: str, payload: dict[str, Any]) -> bool:
        """Replace the payload of the message's point; ``False`` if it has none."""
        pid = point_id(message_id)
        return self._call("set payload", lambda ops: ops.set_payload(pid, payload))

    def delete(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        pids = [point_id(m) for m in message_ids]
        self._call("delete", lambda ops: ops.delete(pids))

    def flush(self) -> None:
        """Make the writes so far durable (a folder's; the other modes wait for each write)."""
        if self._folder is not None:
            self._call("flush", lambda ops: ops.flush())

    def search(
        self, vector: list[float], *, conversation_id: str | None = None, limit: int = 10
    ) -> list[tuple[str, float]]:
        """``(message_id, score)`` of the nearest points, best first."""
        found = self._read("search", lambda ops: ops.search(vector, conversation_id, limit))
        return [(payload["message_id"], score) for payload, score in found]

    def count(self) -> int:
        return self._read("count", lambda ops: ops.count())

    def existing(self, message_ids: Iterable[str], batch: int = 1000) -> set[str]:
        """Which of these messages have a point (looked up by id, ``batch`` at a time)."""
        by_point = {point_id(m): m for m in message_ids}
        ids = list(by_point)
        found: set[str] = set()

        def run(ops: IndexOps) -> None:
            for start in range(0, len(ids), batch):
                found.update(by_point[pid] for pid in ops.existing(ids[start : start + batch]))

        if ids:
            self._read("look up points", run)
        return found

    def message_ids(self) -> set[str]:
        """The message id of every point (a full scan: for doctor and tests)."""
        return self._read(
            "list points",
            lambda ops: {p["message_id"] for p in ops.payloads(["message_id"])},
        )

    def payload(self, message_id: str) -> dict[str, Any] | None:
        pid = point_id(message_id)
        return self._read("read payload", lambda ops: ops.payload(pid))

    def recreate(self) -> None:
        """Drop every point: the index is created again, empty, for this embedder."""
        folder = self._folder
        if folder is not None:
            with self.session(what="recreate", check=False), self._translated("recreate"):
                folder.recreate(self.meta)
            return

        def run(client: QdrantClient) -> None:
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)
            self._ensure_collection(client)

        with self._lock, self._translated("recreate"):
            run(self._connect())
            self._ready = True

    def close(self) -> None:
        self.release_if_idle(force=True)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
