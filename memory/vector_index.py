"""The vector index over qdrant-client: embedded on disk, in memory, or a Qdrant server.

Qdrant's embedded (local) mode locks its folder to one client, so on disk the
folder is held only while it is being used: a process opens it to drain the
outbox or to search, and one thread per process (the releaser) lets it go once
it has been idle for ``linger`` seconds. The process holding it is written to
``holder.json`` in the folder, so a process kept waiting can say who holds it.

Every error of qdrant-client (HTTP, protocol, a reply that is not Qdrant's, a
folder that went away) leaves this module as :class:`IndexUnavailable` naming
the folder or URL, with the original as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from anchorline.errors import AnchorlineError, ConfigurationError, IndexBusy, IndexUnavailable

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

T = TypeVar("T")

log = logging.getLogger("anchorline.index")

POINT_NAMESPACE = uuid.UUID("6f1c8f5e-2d4b-4a7e-9a53-3b1e0c9d7a21")

#: The mode of an index folder Anchorline creates: its owner's alone. Files
#: inside never get more permissions than their folder has (read/write only).
FOLDER_MODE = 0o700


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


def tighten(folder: str) -> None:
    """Take from the files Qdrant keeps in ``folder`` the permissions the folder lacks.

    qdrant-client creates its files with the process umask (0644 under the
    usual 022). The folder's own mode is what protects them; this makes the
    files agree with it, so a file copied out or a folder later opened up does
    not expose them. It only ever removes permissions, and only from Qdrant's
    own files (the folder may be one the user also keeps other things in).
    """
    try:
        allowed = os.stat(folder).st_mode & 0o777
    except OSError:
        return
    top = Path(folder)
    paths = [(top / name, allowed & 0o666) for name in ("meta.json", ".lock", "holder.json")]
    collections = top / "collection"
    if collections.is_dir():
        paths.append((collections, allowed))
        for collection in collections.iterdir():
            paths.append((collection, allowed))
            paths += [(f, allowed & 0o666) for f in collection.glob("storage.sqlite*")]
    for path, limit in paths:
        try:
            mode = path.lstat().st_mode & 0o777
            if mode & ~limit:
                path.chmod(mode & limit)
        except OSError:
            pass  # absent, gone meanwhile, or another user's file in a shared folder


class _Releaser:
    """The one thread per process that lets go of embedded folders once idle.

    It runs only while some folder is held, sleeping until the earliest
    moment one may be released: the write path only stores a deadline.
    """

    _cond = threading.Condition()
    _held: ClassVar[set[_Folder]] = set()
    _thread: ClassVar[threading.Thread | None] = None

    @classmethod
    def watch(cls, folder: _Folder) -> None:
        with cls._cond:
            cls._held.add(folder)
            if cls._thread is None:
                cls._thread = threading.Thread(
                    target=cls._run, name="anchorline-index-release", daemon=True
                )
                cls._thread.start()
            cls._cond.notify()

    @classmethod
    def _run(cls) -> None:
        try:
            while cls._release_due():
                pass
        finally:
            with cls._cond:
                if cls._thread is threading.current_thread():  # it ended on an error
                    cls._thread = None

    @classmethod
    def _release_due(cls) -> bool:
        """Release the folders idle long enough; ``False`` once none is held."""
        with cls._cond:
            cls._held = {f for f in cls._held if f.client is not None}
            if not cls._held:
                cls._thread = None  # under the lock: the next watch() starts a new one
                return False
            now = time.monotonic()
            due = [f for f in cls._held if f.users == 0 and f.release_at <= now]
            if not due:
                soonest = min(f.release_at if f.users == 0 else now + 1.0 for f in cls._held)
                cls._cond.wait(max(0.01, soonest - now))
                return True
        handled = False
        for folder in due:
            try:
                handled = folder.release_if_idle() or handled
            except Exception as e:  # closing failed: the client is dropped all the same
                log.warning("releasing index folder %s: %s: %s", folder.path, type(e).__name__, e)
                handled = True
        if not handled:
            time.sleep(0.05)  # each one is in use right now; look again shortly
        return True


class _Folder:
    """One embedded Qdrant folder, shared by every pipeline of this process."""

    _registry: ClassVar[dict[str, _Folder]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.client: QdrantClient | None = None
        #: Collections known to exist since the folder was opened.
        self.ready: set[str] = set()
        #: Sessions in progress, and when the folder may be released once there are none.
        self.users = 0
        self.release_at = 0.0
        self._identity: tuple[int, int] | None = None

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

        # Created here rather than by qdrant-client, so that a new folder is
        # private from the start; an existing folder keeps the mode it has.
        Path(self.path).mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            try:
                client = QdrantClient(path=self.path)
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
        self.client = client
        stat = os.stat(self.path)
        self._identity = (stat.st_dev, stat.st_ino)
        holder = {"pid": os.getpid(), "since": time.time(), "command": " ".join(sys.argv)[:200]}
        (Path(self.path) / "holder.json").write_text(json.dumps(holder))
        tighten(self.path)
        _Releaser.watch(self)
        return client

    def removed(self) -> bool:
        """Whether the open folder was deleted or replaced since it was opened."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity or not os.path.exists(
            os.path.join(self.path, "meta.json")
        )

    def release(self) -> None:
        if self.client is None:
            return
        client, self.client = self.client, None
        self.ready.clear()
        try:
            with contextlib.suppress(OSError):  # the folder may be gone, or a file now
                (Path(self.path) / "holder.json").unlink(missing_ok=True)
        finally:
            client.close()

    def release_if_idle(self) -> bool:
        """Release the folder if no session uses it and it has lingered long enough."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.client is not None and self.users == 0:
                if time.monotonic() < self.release_at:
                    return True  # used again meanwhile: a new deadline is set
                self.release()
            return True
        finally:
            self.lock.release()


class _FolderRemoved(IndexUnavailable):
    """The open folder was deleted or replaced; it was let go, and opening it again helps."""


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


class VectorIndex:
    """One collection of message vectors, in any of the three modes.

    ``location`` is ``":memory:"``, a folder (embedded mode) or a server URL.
    The collection is named after the embedder and created on first use with
    its dimension and cosine distance. ``linger`` is how long an embedded
    folder stays held once idle; ``wait`` how long to wait for a folder held
    by another process.

    ``on_open(created)`` is called each time the collection is first used
    after the index was opened (an embedded folder is opened again after each
    idle release); ``created`` says the collection did not exist, so every
    point is gone. The indexer uses it to re-queue what the index lacks.
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
        on_open: Callable[[bool], None] | None = None,
    ) -> None:
        self.location = location
        self.dimension = dimension
        self.collection = "anchorline_" + re.sub(r"[^A-Za-z0-9_-]", "_", model)
        self.linger = linger
        self.wait = wait
        self.on_open = on_open
        self._api_key = api_key
        self._client: QdrantClient | None = None
        self._folder: _Folder | None = None
        self._ready = False
        self._lock = threading.RLock()
        if location != ":memory:" and not is_server(location):
            self._folder = _Folder.get(location)

    def __repr__(self) -> str:
        return f"VectorIndex({self.location!r}, collection={self.collection!r})"

    @property
    def embedded(self) -> bool:
        return self._folder is not None

    @contextmanager
    def session(self, wait: float | None = None, what: str = "index") -> Iterator[QdrantClient]:
        """The client for a batch of work; on disk, the folder is held meanwhile.

        An embedded folder held by another process is waited for up to
        ``wait`` seconds (default ``self.wait``), then :class:`IndexBusy`.
        Errors of the client inside the block come out as
        :class:`IndexUnavailable`; ``what`` names the work in their message.
        """
        folder = self._folder
        if folder is None:
            with self._lock:
                with self._translated(what):
                    client = self._connect()
                    created = None if self._ready else self._ensure_collection(client)
                    self._ready = True
                if created is not None and self.on_open is not None:
                    self.on_open(created)
                with self._translated(what):
                    yield client
            return
        with folder.lock:
            folder.users += 1
            try:
                with self._translated(what):
                    client = folder.open(self.wait if wait is None else wait)
                    created = None
                    if self.collection not in folder.ready:
                        created = self._ensure_collection(client)
                        folder.ready.add(self.collection)
                        if created:
                            tighten(folder.path)
                if created is not None and self.on_open is not None:
                    self.on_open(created)
                with self._translated(what):
                    yield client
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
            if folder.client is not None and folder.removed():
                with contextlib.suppress(Exception):  # closing what is gone may fail too
                    folder.release()
                return _FolderRemoved(
                    f"{what}: index folder {folder.path} was removed while in use;"
                    " it is created again and refilled from the database"
                )
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

    def _call(self, what: str, fn: Callable[[QdrantClient], T]) -> T:
        """``fn(client)`` in a session; once more if the folder was removed meanwhile."""
        try:
            with self.session(what=what) as client:
                return fn(client)
        except _FolderRemoved:
            with self.session(what=what) as client:
                return fn(client)

    def _ensure_collection(self, client: QdrantClient) -> bool:
        """Create the collection unless it exists; whether it was created."""
        from qdrant_client import models

        if client.collection_exists(self.collection):
            return False
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
        return True

    def release_if_idle(self, force: bool = False) -> None:
        """Let another process have the embedded folder (at once with ``force``)."""
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
        from qdrant_client import models

        if not points:
            return
        structs = [
            models.PointStruct(id=point_id(p.message_id), vector=p.vector, payload=p.payload)
            for p in points
        ]
        self._call("upsert", lambda c: c.upsert(self.collection, points=structs, wait=True))

    def set_payload(self, message_id: str, payload: dict[str, Any]) -> bool:
        """Replace the payload of the message's point; ``False`` if it has none."""
        pid = point_id(message_id)

        def run(client: QdrantClient) -> bool:
            if not client.retrieve(self.collection, [pid], with_payload=False):
                return False
            client.overwrite_payload(self.collection, payload=payload, points=[pid], wait=True)
            return True

        return self._call("set payload", run)

    def delete(self, message_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not message_ids:
            return
        selector = models.PointIdsList(points=[point_id(m) for m in message_ids])
        self._call(
            "delete", lambda c: c.delete(self.collection, points_selector=selector, wait=True)
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
        found = self._call(
            "search",
            lambda c: (
                c.query_points(
                    self.collection,
                    query=vector,
                    query_filter=query_filter,
                    limit=limit,
                    with_payload=True,
                ).points
            ),
        )
        return [(p.payload["message_id"], p.score) for p in found if p.payload]

    def count(self) -> int:
        return self._call("count", lambda c: int(c.count(self.collection, exact=True).count))

    def existing(self, message_ids: Iterable[str], batch: int = 1000) -> set[str]:
        """Which of these messages have a point (looked up by id, ``batch`` at a time)."""
        by_point = {point_id(m): m for m in message_ids}
        ids = list(by_point)
        found: set[str] = set()

        def run(client: QdrantClient) -> None:
            for start in range(0, len(ids), batch):
                records = client.retrieve(
                    self.collection, ids[start : start + batch], with_payload=False
                )
                found.update(by_point[str(r.id)] for r in records)

        if ids:
            self._call("look up points", run)
        return found

    def message_ids(self) -> set[str]:
        """The message id of every point (a full scan: for doctor and tests)."""

        def run(client: QdrantClient) -> set[str]:
            ids: set[str] = set()
            offset = None
            while True:
                points, offset = client.scroll(
                    self.collection, limit=1000, offset=offset, with_payload=["message_id"]
                )
                ids.update(p.payload["message_id"] for p in points if p.payload)
                if offset is None:
                    return ids

        return self._call("list points", run)

    def payload(self, message_id: str) -> dict[str, Any] | None:
        found = self._call(
            "read payload",
            lambda c: c.retrieve(self.collection, [point_id(message_id)], with_payload=True),
        )
        return dict(found[0].payload or {}) if found else None

    def recreate(self) -> None:
        """Drop every point: the collection is created again, empty."""

        def run(client: QdrantClient) -> None:
            if client.collection_exists(self.collection):
                client.delete_collection(self.collection)
            self._ensure_collection(client)
            if self._folder is not None:
                tighten(self._folder.path)

        self._call("recreate", run)

    def close(self) -> None:
        self.release_if_idle(force=True)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
