"""The indexer: the hooks that keep the vector index in step with the writes, and the
worker thread that does it off the write path.

After each write this plugin only wakes its background worker (or, with
``index_sync=True``, drains right there, after the commit). What a drain does,
and the checks of the index against the database, live in
:mod:`anchorline.memory.index.sync`, which this plugin opens on the terminal's
store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from anchorline.context import Context
from anchorline.embedding import Embedder
from anchorline.errors import ConfigurationError, IndexBusy, IndexUnavailable, PluginError
from anchorline.hookspecs import hookimpl
from anchorline.memory.index.sync import DoctorReport, IndexSync
from anchorline.memory.index.vector_index import VectorIndex, index_location
from anchorline.memory.interface import Outbox, Store
from anchorline.ops import PersistOp, UpdateContent
from anchorline.results import Hit, IndexStatus, Message, PersistResult
from anchorline.settings import Settings

from .text_extraction import message_text

log = logging.getLogger("anchorline.index")

API_KEY_ENV = "ANCHORLINE_QDRANT_API_KEY"


def _check_embedder(embedder: object) -> Embedder:
    if not isinstance(embedder, Embedder) or not isinstance(embedder.dimension, int):
        raise PluginError(
            f"embedder: {embedder!r} is not an Embedder (it needs name, dimension and embed(texts))"
        )
    return embedder


class Indexer:
    """Keeps the vector index in step with the messages' outbox: drains it in a background
    thread woken by each write (or after each write, with ``index_sync``)."""

    #: Background mode waits for writes to pause this long before it drains...
    quiet = 0.05
    #: ...but never longer than this after it was woken.
    max_delay = 0.5

    def __init__(self, settings: Settings, poll_interval: float = 1.0) -> None:
        self.settings = settings
        self.location = index_location(settings.index or "local", settings.path)
        self.sync = settings.index_sync
        #: False: another process (``anchorline index-worker``) drains the outbox.
        self.drains = settings.index_drain
        if self.sync and not self.drains:
            raise ConfigurationError(
                "index_sync=True indexes after each write, index_drain=False leaves indexing"
                " to other processes: choose one"
            )
        self.poll_interval = poll_interval
        self.syncer: IndexSync | None = None  # once open
        self.index: VectorIndex | None = None
        self.embedder: Embedder | None = None
        self._store: Store | None = None  # the terminal's
        self._last_write = 0.0
        self._context: Context | None = None
        self._wake: Callable[[], None] = _nothing  # the outbox's wake(), once open
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        mode = "sync" if self.sync else "background"
        return f"Indexer({self.location!r}, {mode})"

    # --- lifecycle ----------------------------------------------------------

    @hookimpl
    def pipeline_opened(self, context: Context) -> None:
        pipeline = context.pipeline
        self._context = context
        embedder = self.settings.embedder or pipeline.plugin_manager.hook.embedder(context=context)
        self.embedder = _check_embedder(embedder)
        # The terminal's store: an in-memory database exists only there, and
        # in-process writers then queue on its lock instead of busy sleeps.
        store: Store | None = getattr(pipeline.plugin_manager.get_plugin("terminal"), "store", None)
        if store is None:
            raise ConfigurationError(
                "index: the plugin registered as 'terminal' has no store to keep the outbox in;"
                " leave the default terminal in place to index"
            )
        self._store = store
        store.outbox.enable()
        self._wake = store.outbox.wake
        self.syncer = IndexSync(
            store,
            self.embedder,
            self.location,
            api_key=self.settings.index_api_key or os.environ.get(API_KEY_ENV),
            text=self._text,
            get=pipeline.get,
        )
        self.index = self.syncer.index
        if self.drains and not self.sync:
            self._thread = threading.Thread(
                target=self._run, name="anchorline-indexer", daemon=True
            )
            self._thread.start()

    @hookimpl(tryfirst=True)
    def pipeline_closing(self, context: Context) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake()
            self._thread.join()
            self._thread = None
            try:  # what is left stays in the outbox for the next open
                self.drain()
            except Exception as e:
                log.info("index not drained on close (%s); it will be on the next open", e)
        if self.index is not None:
            self.index.close()
        close = getattr(self.embedder, "close", None)  # an HTTP embedder's connections
        if callable(close):
            close()

    # --- write path ---------------------------------------------------------

    @hookimpl
    def after_persist(self, op: PersistOp, result: PersistResult, context: Context) -> None:
        if (
            not self.drains
            or op.kind == "reserve"
            or (isinstance(op, UpdateContent) and not op.final)
        ):
            return  # nothing indexable changed, or another process indexes it
        if self.sync:
            try:
                self.drain()
            except IndexBusy:
                pass  # another process holding the folder drains the shared outbox meanwhile
            except ConfigurationError as e:  # the write stays queued until reindexed
                self._synced().report_failure(f"{type(e).__name__}: {e}")
        else:
            self._last_write = time.monotonic()
            self._wake()

    def _await_quiet(self) -> None:
        """Let a burst of writes finish before competing with it for the GIL and the lock."""
        give_up = time.monotonic() + self.max_delay
        while not self._stop.is_set() and time.monotonic() < give_up:
            idle = time.monotonic() - self._last_write
            if idle >= self.quiet:
                return
            time.sleep(self.quiet - idle)

    def _run(self) -> None:
        # Work left by an earlier run (or a crash) is drained at once; after that
        # the worker sleeps until a write of this process wakes it, or the outbox
        # tells of another's (a store that cannot tell is polled every interval).
        outbox = self.outbox
        woken = outbox.has_due()
        while not self._stop.is_set():
            if not woken:
                outbox.wait(self.poll_interval)
            woken = False
            try:
                self._await_quiet()
                self.drain()
            except IndexBusy:
                pass  # another process holds the folder; it drains the shared outbox
            except (IndexUnavailable, ConfigurationError) as e:
                self._synced().report_failure(f"{type(e).__name__}: {e}")
            except Exception:
                log.exception("index worker")

    # --- the pipeline's index API: the sync's ------------------------------

    @property
    def outbox(self) -> Outbox:
        """The outbox of the terminal's store."""
        assert self._store is not None
        return self._store.outbox

    def _synced(self) -> IndexSync:
        assert self.syncer is not None, "the pipeline is not open"
        return self.syncer

    def drain(self, *, force: bool = False, wait: float = 0.0) -> int:
        """Process due outbox items until none are left (:meth:`IndexSync.drain`)."""
        return self._synced().drain(force=force, wait=wait)

    def status(self) -> IndexStatus:
        return self._synced().status()

    def flush(self, timeout: float | None = None) -> IndexStatus:
        """Drain until the outbox is empty (:meth:`IndexSync.flush`)."""
        return self._synced().flush(timeout)

    def settle(self, timeout: float) -> int:
        """Wait for what is pending now to be indexed (:meth:`IndexSync.settle`)."""
        return self._synced().settle(timeout)

    def reconcile(self, created: bool = False) -> int:
        """Queue what the index lacks (:meth:`IndexSync.reconcile`)."""
        return self._synced().reconcile(created)

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the index from the store (:meth:`IndexSync.reindex`)."""
        return self._synced().reindex(progress)

    def doctor(self) -> DoctorReport:
        """Compare the messages to index with the points (:meth:`IndexSync.doctor`)."""
        return self._synced().doctor()

    def search(self, query: str, conversation_id: str | None, limit: int) -> list[Hit]:
        return self._synced().search(query, conversation_id, limit)

    def _text(self, message: Message) -> str:
        assert self._context is not None
        text = self._context.pipeline.plugin_manager.hook.index_text(
            message=message, context=self._context
        )
        return message_text(message) if text is None else str(text)


def _nothing() -> None:
    pass


def create(settings: Settings) -> Indexer | None:
    if settings.index is None:
        return None
    if settings.terminal is not None:
        raise ConfigurationError(
            "index: the outbox lives in the default terminal's store; a replacement terminal"
            " indexes its own writes (see docs/indexing.md)"
        )
    return Indexer(settings)
