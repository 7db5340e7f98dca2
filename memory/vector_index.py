"""The vector index over qdrant-client: embedded on disk, in memory, or a Qdrant server.

Qdrant's embedded (local) mode locks its folder to one client, so on disk the
folder is held only while it is being used: a process opens it to drain the
outbox or to search, and lets it go once idle. The process holding it is
written to ``holder.json`` in the folder, so a process kept waiting can say
who holds it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from anchorline.errors import IndexBusy

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

POINT_NAMESPACE = uuid.UUID("6f1c8f5e-2d4b-4a7e-9a53-3b1e0c9d7a21")


def point_id(message_id: str) -> str:
    """The Qdrant point id of a message: a UUIDv5 of its id, the same everywhere."""
    return str(uuid.uuid5(POINT_NAMESPACE, message_id))


@attrs.frozen
class Point:
    message_id: str
    vector: list[float]
    payload: dict[str, Any]


def index_location(index: str, db_path: str) -> str:
    """Where an ``index=`` setting points: ``":memory:"``, a URL, or a folder."""
    if index == ":memory:" or index.startswith(("http://", "https://")):
        return index
    if index == "local":
        if db_path == ":memory:":
            return ":memory:"
        return str(Path(db_path).with_name(Path(db_path).name + ".index"))
    return index  # an explicit folder


class _Folder:
    """One embedded Qdrant folder, shared by every pipeline of this process."""

    _registry: ClassVar[dict[str, _Folder]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.client: QdrantClient | None = None
        self.last_used = 0.0

    @classmethod
    def get(cls, path: str) -> _Folder:
        key = os.path.realpath(path)
        with cls._registry_lock:
            folder = cls._registry.get(key)
            if folder is None:
                folder = cls._registry[key] = _Folder(key)
            return folder

    def holder(self) -> str:
        try:
            info = json.loads((Path(self.path) / "holder.json").read_text())
            return f"process {info['pid']} ({info.get('command', '?')})"
        except (OSError, ValueError, KeyError):
            return "another process"

    def open(self, wait: float) -> QdrantClient:
        """The client, opening the folder if needed; waits up to ``wait`` seconds for it."""
        if self.client is not None:
            return self.client
        from qdrant_client import QdrantClient

        deadline = time.monotonic() + wait
        while True:
            try:
                self.client = QdrantClient(path=self.path)
                break
            except RuntimeError as e:
                if "already accessed" not in str(e):
                    raise
                if time.monotonic() >= deadline:
                    raise IndexBusy(
                        f"index folder {self.path} is held by {self.holder()};"
                        " it is released once that process is idle, or use a Qdrant server"
                    ) from None
                time.sleep(0.05)
        holder = {"pid": os.getpid(), "since": time.time(), "command": " ".join(sys.argv)[:200]}
        (Path(self.path) / "holder.json").write_text(json.dumps(holder))
        return self.client

    def release(self) -> None:
        if self.client is None:
            return
        try:
            (Path(self.path) / "holder.json").unlink(missing_ok=True)
        finally:
            self.client.close()
            self.client = None


class VectorIndex:
    """One collection of message vectors, in any of the three modes.

    ``location`` is ``":memory:"``, a folder (embedded mode) or a server URL.
    The collection is named after the embedder and created on first use with
    its dimension and cosine distance.
    """

    def __init__(
        self,
        location: str,
        *,
        model: str,
        dimension: int,
        api_key: str | None = None,
        linger: float = 2.0,
        wait: float = 10.0,
    ) -> None:
        self.location = location
        self.dimension = dimension
        self.collection = "anchorline_" + re.sub(r"[^A-Za-z0-9_-]", "_", model)
        self.linger = linger
        self.wait = wait
        self._api_key = api_key
        self._client: QdrantClient | None = None
        self._folder: _Folder | None = None
        self._ready = False
        self._lock = threading.RLock()
        if location != ":memory:" and not location.startswith(("http://", "https://")):
            Path(location).mkdir(parents=True, exist_ok=True)
            self._folder = _Folder.get(location)

    def __repr__(self) -> str:
        return f"VectorIndex({self.location!r}, collection={self.collection!r})"

    @property
    def embedded(self) -> bool:
        return self._folder is not None

    @contextmanager
    def session(self, wait: float | None = None) -> Iterator[QdrantClient]:
        """The client for a batch of work; on disk, the folder is held meanwhile.

        An embedded folder held by another process is waited for up to
        ``wait`` seconds (default ``self.wait``), then :class:`IndexBusy`.
        """
        if self._folder is None:
            with self._lock:
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
                self._ensure_collection(self._client)
                yield self._client
            return
        folder = self._folder
        with folder.lock:
            client = folder.open(self.wait if wait is None else wait)
            self._ensure_collection(client)
            try:
                yield client
            finally:
                folder.last_used = time.monotonic()

    def release_if_idle(self, force: bool = False) -> None:
        """Let another process have the embedded folder once it has been idle a while."""
        folder = self._folder
        if folder is None or folder.client is None:
            return
        if force or time.monotonic() - folder.last_used >= self.linger:
            with folder.lock:
                folder.release()
                self._ready = False

    def _ensure_collection(self, client: QdrantClient) -> None:
        if self._ready:
            return
        from qdrant_client import models

        if not client.collection_exists(self.collection):
            client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(
                    size=self.dimension, distance=models.Distance.COSINE
                ),
            )
            if not self.embedded and self.location != ":memory:":
                client.create_payload_index(
                    self.collection, "conversation_id", models.PayloadSchemaType.KEYWORD
                )
        self._ready = True

    # --- operations ---------------------------------------------------------

    def upsert(self, points: Sequence[Point]) -> None:
        from qdrant_client import models

        if not points:
            return
        with self.session() as client:
            client.upsert(
                self.collection,
                points=[
                    models.PointStruct(
                        id=point_id(p.message_id), vector=p.vector, payload=p.payload
                    )
                    for p in points
                ],
                wait=True,
            )

    def set_payload(self, message_id: str, payload: dict[str, Any]) -> bool:
        """Replace the payload of the message's point; ``False`` if it has none."""
        with self.session() as client:
            pid = point_id(message_id)
            if not client.retrieve(self.collection, [pid], with_payload=False):
                return False
            client.overwrite_payload(self.collection, payload=payload, points=[pid], wait=True)
            return True

    def delete(self, message_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not message_ids:
            return
        with self.session() as client:
            client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=[point_id(m) for m in message_ids]),
                wait=True,
            )

    def search(
        self, vector: list[float], *, conversation_id: str | None = None, limit: int = 10
    ) -> list[tuple[str, float]]:
        """``(message_id, score)`` of the nearest points, best first."""
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
        with self.session() as client:
            found = client.query_points(
                self.collection,
                query=vector,
                query_filter=query_filter,
                limit=limit,
                with_payload=True,
            ).points
        return [(p.payload["message_id"], p.score) for p in found if p.payload]

    def count(self) -> int:
        with self.session() as client:
            return int(client.count(self.collection, exact=True).count)

    def message_ids(self) -> set[str]:
        """The message id of every point (a full scan: for doctor and tests)."""
        ids: set[str] = set()
        with self.session() as client:
            offset = None
            while True:
                points, offset = client.scroll(
                    self.collection, limit=1000, offset=offset, with_payload=["message_id"]
                )
                ids.update(p.payload["message_id"] for p in points if p.payload)
                if offset is None:
                    return ids

    def payload(self, message_id: str) -> dict[str, Any] | None:
        with self.session() as client:
            found = client.retrieve(self.collection, [point_id(message_id)], with_payload=True)
        return dict(found[0].payload or {}) if found else None

    def recreate(self) -> None:
        """Drop every point: the collection is created again, empty."""
        with self.session() as client:
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)
            self._ready = False
            self._ensure_collection(client)

    def close(self) -> None:
        self.release_if_idle(force=True)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
