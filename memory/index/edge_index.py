"""The embedded vector index on Qdrant Edge: one shard in a folder, one process at a time.

A shard's files may be opened by one process only: a second ``EdgeShard.load``
of a folder in use fails, and damages what the holder flushes next. So before
the shard is touched, the process takes an exclusive ``flock`` on
``anchorline.lock`` in the folder and writes its pid there; another process
never loads the shard while that lock is held, and is told who holds it
(:class:`IndexBusy`). The lock dies with its process.

Reads need not wait for the holder: it answers them. While a process holds the
folder, a thread of it listens on ``anchorline.sock`` in the folder
(:class:`HolderServer`), and another process's search, count or scan is sent
there and run on the holder's open shard (:class:`HolderOps`), which sees every
point upserted so far, flushed or not.

The index is a cache of the store. A folder that holds no shard, one in the
format of qdrant-client's local mode (Anchorline's embedded index before Qdrant
Edge), or one that cannot be read is emptied of those files and created again;
the caller is told it was created, and the indexer refills it from the database.
``anchorline-index.json`` records the embedder the vectors came from: a folder
built by another embedder is refused (:class:`ConfigurationError`) until
``anchorline reindex`` rebuilds it, so two models' vectors never mix.

Search is exact (Qdrant Edge scans plain segments, through the payload index
when filtered) until :meth:`EdgeFolder.optimize` builds HNSW on request.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from anchorline.errors import ConfigurationError, IndexBusy, IndexUnavailable

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from qdrant_edge import EdgeShard

log = logging.getLogger("anchorline.index")

#: The mode of an index folder Anchorline creates: its owner's alone.
FOLDER_MODE = 0o700
LOCK_FILE = "anchorline.lock"
#: Where the holder of a folder answers other processes' reads.
SOCKET_FILE = "anchorline.sock"
#: How long a reader waits for the holder's answer to one request.
ASK_TIMEOUT = 5.0
META_FILE = "anchorline-index.json"
#: What Qdrant Edge keeps in a shard's folder.
EDGE_ENTRIES = ("edge_config.json", "segments", "wal")
#: What qdrant-client's local mode kept there (Anchorline's format before Qdrant Edge).
LOCAL_MODE_ENTRIES = ("meta.json", "collection", ".lock", "holder.json")
#: The free space below which nothing is written to a shard. Qdrant Edge writes through
#: memory maps of sparse files, and a page that cannot be had on a full disk kills the
#: process (SIGBUS) instead of failing the write; this margin keeps clear of that.
MIN_FREE_BYTES = 64 * 1024 * 1024
#: Before each write, the blocks it may touch are allocated: in each of a shard's files,
#: this far past what the file holds (a batch of vectors goes to the end of its chunk
#: file, the rest of a write into the other files, a little at the end of each). Once the
#: file's data reaches the second half of what was allocated, another window is. A page
#: Qdrant Edge writes through its map is then one the disk has already given.
VECTOR_WINDOW = 8 * 1024 * 1024
OTHER_WINDOW = 512 * 1024
#: Payload fields filtered on: each gets a keyword index.
KEYWORD_FIELDS = ("conversation_id", "role")


@attrs.frozen
class IndexMeta:
    """Which embedder's vectors an index folder holds."""

    embedder: str
    dimension: int
    #: The setting that makes this embedder again (``hashing``, ``openai:<model>``,
    #: ``local:<folder>``), if it has one: what a later command uses when given none.
    spec: str | None = attrs.field(default=None, eq=False)

    def describe(self) -> str:
        return f"{self.embedder!r} (dimension {self.dimension})"


def read_meta(folder: str) -> IndexMeta | None:
    """The embedder recorded in ``folder``, or ``None`` if none is (or it cannot be read)."""
    try:
        data = json.loads((Path(folder) / META_FILE).read_text())
        spec = data.get("spec")
        return IndexMeta(
            str(data["embedder"]), int(data["dimension"]), spec if isinstance(spec, str) else None
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_meta(folder: str, meta: IndexMeta) -> None:
    path = Path(folder) / META_FILE
    temporary = path.with_name(path.name + ".tmp")
    data: dict[str, Any] = {"embedder": meta.embedder, "dimension": meta.dimension}
    if meta.spec is not None:
        data["spec"] = meta.spec
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def mismatch_error(folder: str, found: IndexMeta, wanted: IndexMeta) -> ConfigurationError:
    return ConfigurationError(
        f"index folder {folder} holds vectors of embedder {found.describe()}, and this"
        f" pipeline's embedder is {wanted.describe()}: run 'anchorline reindex' to rebuild"
        " the index with it (or go back to the embedder the index was built with)"
    )


def tighten(folder: str) -> None:
    """Take from the files Anchorline and Qdrant Edge keep in ``folder`` the permissions
    the folder lacks.

    Qdrant Edge creates its files with the process umask (0644 under the usual
    022). The folder's own mode is what protects them; this makes the files
    agree with it. It only ever removes permissions, and only from the index's
    own files (the folder may be one the user also keeps other things in).
    """
    try:
        allowed = os.stat(folder).st_mode & 0o777
    except OSError:
        return
    top = Path(folder)
    paths: list[tuple[Path, int]] = []
    for name in (*EDGE_ENTRIES, LOCK_FILE, META_FILE, SOCKET_FILE):
        entry = top / name
        paths.append((entry, allowed if entry.is_dir() else allowed & 0o666))
        if entry.is_dir():
            for path in entry.rglob("*"):
                paths.append((path, allowed if path.is_dir() else allowed & 0o666))
    for path, limit in paths:
        try:
            mode = path.lstat().st_mode & 0o777
            if mode & ~limit:
                path.chmod(mode & limit)
        except OSError:
            pass  # absent, gone meanwhile, or another user's file in a shared folder


def _free(folder: str) -> int | None:
    """The bytes free on ``folder``'s disk (``None`` if it cannot be told)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def check_room(folder: str) -> None:
    """Raise :class:`IndexUnavailable` if ``folder``'s disk has too little free space to
    write to a shard safely (see :data:`MIN_FREE_BYTES`)."""
    free = _free(folder)
    if free is not None and free < MIN_FREE_BYTES:  # None: the write itself says what is wrong
        raise IndexUnavailable(
            f"index folder {folder}: {free // (1024 * 1024)} MB free on its disk, and the"
            f" index writes only with {MIN_FREE_BYTES // (1024 * 1024)} MB free or more;"
            " free some space (what waits is indexed then)"
        )


#: How far each sparse file of a shard is allocated, by (device, inode).
_reserved: dict[tuple[int, int], int] = {}


def reserve_room(folder: str) -> None:
    """Make ready for a write to the shard in ``folder``: check the free space (see
    :func:`check_room`), then allocate the blocks of its files the write may touch (see
    :data:`VECTOR_WINDOW`), so that a disk filled meanwhile fails this call, with
    :class:`IndexUnavailable`, instead of killing the process when a mapped page cannot be
    had."""
    check_room(folder)
    for path, stat in _sparse_files(os.path.join(folder, "segments")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, or not ours to write
        try:
            vectors = os.path.basename(os.path.dirname(path)) == "vectors"
            _reserve(fd, stat, VECTOR_WINDOW if vectors else OTHER_WINDOW)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise IndexUnavailable(
                    f"index folder {folder}: its disk is full (no room for the next write);"
                    " free some space (what waits is indexed then)"
                ) from e
            # A file system that cannot allocate ahead: the free-space check is all there is.
        finally:
            os.close(fd)


def _sparse_files(top: str) -> Iterator[tuple[str, os.stat_result]]:
    """The files under ``top`` with holes (fewer blocks than their size), with their stat."""
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _sparse_files(entry.path)
            elif entry.is_file(follow_symlinks=False):
                stat = entry.stat(follow_symlinks=False)
                if stat.st_blocks * 512 < stat.st_size:
                    yield entry.path, stat
        except OSError:
            continue


def _reserve(fd: int, stat: os.stat_result, window: int) -> None:
    size, allocated = stat.st_size, stat.st_blocks * 512
    key = (stat.st_dev, stat.st_ino)
    reserved = _reserved.get(key)
    if reserved is None or reserved > size or allocated < reserved:  # new (or replaced)
        target = min(size, allocated + window)  # new here: its data is what is allocated
    else:
        if reserved >= size:
            return
        # Data is written from the front: a look where the second half begins tells.
        probe = os.pread(fd, 4096, max(0, reserved - window // 2))
        if probe.count(0) == len(probe):
            return  # its data has not reached the second half of the window yet
        target = min(size, reserved + window)
    os.posix_fallocate(fd, 0, target)
    _reserved[key] = target


def _remove(folder: str, names: tuple[str, ...]) -> None:
    for name in names:
        path = Path(folder) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class EdgeFolder:
    """One index folder, shared by every pipeline of this process.

    ``lock`` guards the shard; ``users`` counts the sessions in progress, and
    ``release_at`` is when the folder may be let go once there are none (see
    :class:`Releaser`).
    """

    _registry: ClassVar[dict[str, EdgeFolder]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.shard: EdgeShard | None = None
        self.meta: IndexMeta | None = None
        #: The indexes (by ``id``) told of the opening since the shard was opened.
        self.ready: set[int] = set()
        self.users = 0
        self.release_at = 0.0
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None
        #: Answers other processes' reads while the shard is open here.
        self.server: HolderServer | None = None

    def __repr__(self) -> str:
        return f"EdgeFolder({self.path!r})"

    @classmethod
    def get(cls, path: str) -> EdgeFolder:
        key = os.path.realpath(path)
        with cls._registry_lock:
            folder = cls._registry.get(key)
            if folder is None:
                folder = cls._registry[key] = EdgeFolder(key)
            return folder

    @property
    def is_open(self) -> bool:
        return self.shard is not None

    def holder(self) -> str:
        try:
            info = json.loads((Path(self.path) / LOCK_FILE).read_text())
            return f"process {info['pid']} ({info.get('command', '?')})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def busy(self) -> IndexBusy:
        return IndexBusy(
            f"index folder {self.path} is held by {self.holder()};"
            " it is released once that process is idle, or use a Qdrant server"
        )

    # --- opening and letting go ---------------------------------------------

    def open(
        self, wait: float, wanted: IndexMeta, *, check: bool = True, serve: bool = True
    ) -> tuple[EdgeShard, bool]:
        """The shard, and whether it was just created (so it is empty).

        Takes the folder's lock first, waiting up to ``wait`` seconds for
        another process to let go of it (then :class:`IndexBusy`). With
        ``check``, a folder built by another embedder is refused. With
        ``serve``, other processes' reads are answered while it is held.
        """
        with self.lock:
            if self.shard is not None and self.removed():
                log.info("index folder %s was removed while open: creating it again", self.path)
                with contextlib.suppress(Exception):  # what is gone may fail to close
                    self.release()
                self.shard = None
                self.ready.clear()
                self._drop_lock()
            if self.shard is not None:
                assert self.meta is not None
                if check and self.meta != wanted:
                    raise mismatch_error(self.path, self.meta, wanted)
                return self.shard, False
            Path(self.path).mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            self._take_lock(wait)
            try:
                shard, created = self._load(wanted, check)
            except BaseException:
                self._drop_lock()
                raise
            self.shard = shard
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)
            if serve:
                self.server = HolderServer.start(self)
            tighten(self.path)
            Releaser.watch(self)
            return shard, created

    def _take_lock(self, wait: float) -> None:
        lock_path = os.path.join(self.path, LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                if time.monotonic() >= deadline:
                    raise self.busy()
                time.sleep(0.05)
            holder = {
                "pid": os.getpid(),
                "since": time.time(),
                "command": " ".join(sys.argv)[:200],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _drop_lock(self) -> None:
        server, self.server = self.server, None
        if server is not None:  # before the lock goes: the next holder binds the socket
            server.stop()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def _load(self, wanted: IndexMeta, check: bool) -> tuple[EdgeShard, bool]:
        from qdrant_edge import EdgeShard

        folder = Path(self.path)
        if any((folder / name).exists() for name in LOCAL_MODE_ENTRIES[:2]):
            log.warning(
                "index folder %s is in the format of an earlier Anchorline (qdrant-client"
                " local mode): rebuilding it as Qdrant Edge from the database",
                self.path,
            )
            _remove(self.path, LOCAL_MODE_ENTRIES)
            return self._create(wanted), True
        if not any((folder / name).exists() for name in EDGE_ENTRIES):
            return self._create(wanted), True
        meta = read_meta(self.path)
        if meta is None:
            log.warning(
                "index folder %s does not say which embedder built it: rebuilding it from"
                " the database",
                self.path,
            )
            return self._create(wanted), True
        if check and meta != wanted:
            raise mismatch_error(self.path, meta, wanted)
        try:
            shard = EdgeShard.load(self.path)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # a Rust panic comes out as a BaseException
            log.warning(
                "index folder %s could not be read (%s: %s): rebuilding it from the database",
                self.path,
                type(e).__name__,
                " ".join(str(e).split())[:200],
            )
            return self._create(wanted), True
        self.meta = meta
        return shard, False

    def _create(self, wanted: IndexMeta) -> EdgeShard:
        """A new empty shard for ``wanted``'s vectors, in place of whatever was there."""
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeVectorParams,
            PayloadSchemaType,
            UpdateOperation,
        )

        _remove(self.path, (META_FILE, *EDGE_ENTRIES))
        check_room(self.path)
        config = EdgeConfig(
            vectors=EdgeVectorParams(size=wanted.dimension, distance=Distance.Cosine),
            wal_enabled=False,
        )
        shard = EdgeShard.create(self.path, config)
        reserve_room(self.path)
        for field in KEYWORD_FIELDS:
            shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
        shard.flush()
        _write_meta(self.path, wanted)  # last: a folder without it is rebuilt
        self.meta = wanted
        return shard

    def recreate(self, wanted: IndexMeta) -> EdgeShard:
        """Drop every point (and the embedder recorded): a new empty shard for ``wanted``."""
        with self.lock:
            if self.shard is not None:
                shard, self.shard = self.shard, None
                shard.close()
            self.shard = self._create(wanted)
            tighten(self.path)
            return self.shard

    def removed(self) -> bool:
        """Whether the open folder was deleted or replaced since it was opened."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity or not os.path.exists(
            os.path.join(self.path, LOCK_FILE)
        )

    def release(self) -> None:
        """Close the shard (flushed) and let go of the folder's lock."""
        with self.lock:
            if self.shard is None:
                return
            shard, self.shard = self.shard, None
            self.meta = None
            self.ready.clear()
            try:
                with contextlib.suppress(Exception):  # the folder may be gone
                    shard.flush()
                shard.close()
            finally:
                self._drop_lock()

    def release_if_idle(self) -> bool:
        """Release the folder if no session uses it and it has lingered long enough."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.shard is not None and self.users == 0:
                if time.monotonic() < self.release_at:
                    return True  # used again meanwhile: a new deadline is set
                self.release()
            return True
        finally:
            self.lock.release()


class Releaser:
    """The one thread per process that lets go of index folders once idle.

    It runs only while some folder is held, sleeping until the earliest
    moment one may be released: the write path only stores a deadline.
    """

    _cond = threading.Condition()
    _held: ClassVar[set[EdgeFolder]] = set()
    _thread: ClassVar[threading.Thread | None] = None

    @classmethod
    def watch(cls, folder: EdgeFolder) -> None:
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
            cls._held = {f for f in cls._held if f.is_open}
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
            except Exception as e:  # closing failed: the shard is dropped all the same
                log.warning("releasing index folder %s: %s: %s", folder.path, type(e).__name__, e)
                handled = True
        if not handled:
            time.sleep(0.05)  # each one is in use right now; look again shortly
        return True


#: What a point of the embedded index keeps of its message. Not the metadata: a
#: deleted point's payload stays in the shard's page files until they are rewritten,
#: and a forgotten conversation must leave no text behind.
KEPT = ("message_id", "conversation_id", "role", "created_at")


def kept(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: payload[key] for key in KEPT if key in payload}


class EdgeOps:
    """The index's operations on one open shard, by point id (see ``point_id``)."""

    def __init__(self, shard: EdgeShard, path: str) -> None:
        self.shard = shard
        self.shard_path = path

    def upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        from qdrant_edge import Point, UpdateOperation

        reserve_room(self.shard_path)
        self.shard.update(
            UpdateOperation.upsert_points(
                [Point(id=pid, vector=vector, payload=kept(p)) for pid, vector, p in points]
            )
        )

    def set_payload(self, pid: str, payload: dict[str, Any]) -> bool:
        # Only metadata changes after a point is written, and a folder keeps none.
        return bool(self.shard.retrieve([pid], with_payload=False, with_vector=False))

    def delete(self, pids: list[str]) -> None:
        from qdrant_edge import UpdateOperation

        reserve_room(self.shard_path)
        self.shard.update(UpdateOperation.delete_points(list(pids)))

    def search(
        self, vector: list[float], conversation_id: str | None, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        from qdrant_edge import FieldCondition, Filter, MatchValue, Query, QueryRequest

        where = None
        if conversation_id is not None:
            where = Filter(
                must=[FieldCondition(key="conversation_id", match=MatchValue(conversation_id))]
            )
        found = self.shard.query(
            QueryRequest(query=Query.Nearest(vector), limit=limit, filter=where, with_payload=True)
        )
        return [(p.payload, p.score) for p in found if p.payload]

    def count(self) -> int:
        from qdrant_edge import CountRequest

        return self.shard.count(CountRequest(exact=True))

    def existing(self, pids: list[str]) -> set[str]:
        """Which of these point ids have a point."""
        records = self.shard.retrieve(list(pids), with_payload=False, with_vector=False)
        return {str(r.id) for r in records}

    def payloads(self, fields: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """The payload of every point (``fields`` of it only, if given), in pages."""
        from qdrant_edge import ScrollRequest

        offset = None
        while True:
            records, offset = self.shard.scroll(
                ScrollRequest(offset=offset, limit=1000, with_payload=fields or True)
            )
            yield from (r.payload for r in records if r.payload)
            if offset is None:
                return

    def payload(self, pid: str) -> dict[str, Any] | None:
        found = self.shard.retrieve([pid], with_payload=True, with_vector=False)
        return dict(found[0].payload or {}) if found else None

    def flush(self) -> None:
        try:
            reserve_room(self.shard_path)  # a flush writes through the maps too
            self.shard.flush()
        except Exception as e:
            if "os error 28" in str(e) or "No space left" in str(e) or _free(self.shard_path) == 0:
                raise IndexUnavailable(
                    f"index folder {self.shard_path}: its disk is full (the index could not be"
                    " saved); free some space (what waits is indexed then)"
                ) from e
            raise
        # Qdrant Edge makes files as it goes (WAL and segment files): each flush
        # brings the new ones in line with the folder.
        tighten(self.shard_path)


# --- reads answered by the holder ------------------------------------------------


@contextlib.contextmanager
def _address(folder: str) -> Iterator[str]:
    """The address of ``folder``'s socket: its path, or, when that is longer than a
    socket address may be, the same file reached through a descriptor of the folder."""
    path = os.path.join(folder, SOCKET_FILE)
    if len(os.fsencode(path)) < 100 or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_FILE}"
    finally:
        os.close(fd)


def _send(sock: socket.socket, message: Any) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _receive(sock: socket.socket) -> Any:
    chunks: list[bytes] = []
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionResetError("the other end closed the connection")
        chunks.append(chunk)
    return json.loads(b"".join(chunks))


class HolderGone(IndexBusy):
    """The process holding the folder did not answer (it is letting go of it, or busy)."""


class HolderServer:
    """The thread that answers other processes' reads of the shard this process holds.

    One connection carries one request and its answer, as lines of JSON. A
    request runs under the folder's lock, on the open shard, so it sees every
    point upserted so far; the answer comes back as JSON.
    """

    def __init__(self, folder: EdgeFolder, sock: socket.socket) -> None:
        self.folder = folder
        self.sock = sock
        self.stopped = False
        self.thread = threading.Thread(
            target=self._serve, name="anchorline-index-reads", daemon=True
        )

    @classmethod
    def start(cls, folder: EdgeFolder) -> HolderServer | None:
        """Listen on the folder's socket (``None`` if it cannot: then other processes' reads
        wait for the folder, as writes do)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):  # a dead holder's; we hold the lock
                os.unlink(os.path.join(folder.path, SOCKET_FILE))
            with _address(folder.path) as address:
                sock.bind(address)
            # Whoever may enter the folder may ask (connecting takes write permission).
            allowed = os.stat(folder.path).st_mode & 0o666
            os.chmod(os.path.join(folder.path, SOCKET_FILE), allowed)
            sock.listen(64)
            sock.settimeout(1.0)
        except OSError as e:
            sock.close()
            log.info(
                "index folder %s: other processes' reads are not answered (%s)", folder.path, e
            )
            return None
        server = cls(folder, sock)
        server.thread.start()
        return server

    def stop(self) -> None:
        """Stop answering; the socket goes at once, the thread once it wakes."""
        self.stopped = True
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.folder.path, SOCKET_FILE))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()

    def _serve(self) -> None:
        try:
            while not self.stopped:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stopped:
                        return
                    time.sleep(0.05)
                    continue
                with conn:
                    try:
                        conn.settimeout(ASK_TIMEOUT)
                        _send(conn, self._answer(_receive(conn)))
                    except (OSError, ValueError) as e:
                        log.debug(
                            "index folder %s: a read went unanswered: %s", self.folder.path, e
                        )
        finally:
            self.sock.close()

    def _answer(self, request: Any) -> dict[str, Any]:
        folder = self.folder
        give_up = time.monotonic() + ASK_TIMEOUT
        while not folder.lock.acquire(timeout=0.1):  # never blocks the release that stops us
            if self.stopped or time.monotonic() > give_up:
                return {"gone": True}
        try:
            if self.stopped or folder.server is not self or folder.shard is None:
                return {"gone": True}
            wanted = IndexMeta(str(request["embedder"]), int(request["dimension"]))
            if folder.meta != wanted:
                assert folder.meta is not None
                return {"error": str(mismatch_error(folder.path, folder.meta, wanted))}
            ops = EdgeOps(folder.shard, folder.path)
            op = request["op"]
            result: Any
            if op == "search":
                result = ops.search(
                    [float(x) for x in request["vector"]],
                    request["conversation_id"],
                    int(request["limit"]),
                )
            elif op == "count":
                result = ops.count()
            elif op == "existing":
                result = sorted(ops.existing([str(p) for p in request["pids"]]))
            elif op == "payloads":
                result = list(ops.payloads(request["fields"]))
            elif op == "payload":
                result = ops.payload(str(request["pid"]))
            else:
                return {"error": f"unknown request {op!r}"}
            return {"result": result}
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # a Rust panic comes out as a BaseException
            return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
        finally:
            folder.lock.release()


def ask(folder: str, request: dict[str, Any], timeout: float) -> Any:
    """Send a read to the process holding ``folder``; its result.

    :class:`HolderGone` if no process answers (none serves the folder, or it is
    letting go of it); :class:`IndexUnavailable` if the read failed there.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _address(folder) as address:
            sock.connect(address)
        _send(sock, request)
        reply = _receive(sock)
    except (OSError, ValueError) as e:
        raise HolderGone(f"index folder {folder}: its holder did not answer ({e})") from e
    finally:
        sock.close()
    if not isinstance(reply, dict) or reply.get("gone"):
        raise HolderGone(f"index folder {folder}: its holder is letting go of it")
    if "error" in reply:
        raise IndexUnavailable(
            f"index folder {folder}: the process holding it could not read it ({reply['error']})"
        )
    return reply.get("result")


class HolderOps:
    """The reads of a shard another process holds, answered by that process.

    Only reads: a write to a folder waits for the folder (the holder drains
    the shared outbox meanwhile).
    """

    def __init__(self, path: str, meta: IndexMeta, timeout: float = ASK_TIMEOUT) -> None:
        self.path = path
        self.meta = meta
        self.timeout = timeout

    def _ask(self, op: str, **arguments: Any) -> Any:
        request = {"op": op, "embedder": self.meta.embedder, "dimension": self.meta.dimension}
        return ask(self.path, {**request, **arguments}, self.timeout)

    def _held(self) -> IndexBusy:
        return IndexBusy(f"index folder {self.path} is held by another process: it writes there")

    def upsert(self, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        raise self._held()

    def set_payload(self, pid: str, payload: dict[str, Any]) -> bool:
        raise self._held()

    def delete(self, pids: list[str]) -> None:
        raise self._held()

    def flush(self) -> None:
        raise self._held()

    def search(
        self, vector: list[float], conversation_id: str | None, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        found = self._ask(
            "search", vector=[float(x) for x in vector], conversation_id=conversation_id,
            limit=limit,
        )  # fmt: skip
        return [(dict(p), float(score)) for p, score in found]

    def count(self) -> int:
        return int(self._ask("count"))

    def existing(self, pids: list[str]) -> set[str]:
        return set(self._ask("existing", pids=list(pids)))

    def payloads(self, fields: list[str] | None = None) -> Iterator[dict[str, Any]]:
        yield from self._ask("payloads", fields=fields)

    def payload(self, pid: str) -> dict[str, Any] | None:
        found = self._ask("payload", pid=pid)
        return None if found is None else dict(found)


def optimize_folder(path: str, wait: float = 0.0) -> bool:
    """Build the HNSW graph of the shard in ``path``; whether anything changed.

    Qdrant Edge holds the GIL while it optimizes (a minute or more at 50k
    points), and the folder is held meanwhile: run it in a process of its own,
    never in one that writes (``anchorline index optimize`` does).
    """
    built = read_meta(path)
    if built is None:
        raise IndexUnavailable(f"index folder {path}: no index there to optimize")
    folder = EdgeFolder.get(path)
    with folder.lock:
        folder.users += 1
        try:
            # Not served: the optimizer holds the GIL, so it could not answer.
            shard, _ = folder.open(wait, built, serve=False)
            changed = shard.optimize()
            shard.flush()
            tighten(folder.path)
            return changed
        finally:
            folder.users -= 1
            folder.release()


def optimize_in_child(path: str, answer: Connection) -> None:
    """:func:`optimize_folder` as the target of a child process: sends back whether it
    changed anything, or the error (as ``(type name, message)``)."""
    try:
        answer.send(optimize_folder(path))
    except BaseException as e:
        answer.send((type(e).__name__, str(e)))
    finally:
        answer.close()
