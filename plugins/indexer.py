"""The indexer: drains the index outbox into the vector index, off the write path.

The store records each intent to index in the same transaction as the message
write (its :class:`~anchorline.memory.interface.Outbox`). This plugin only wakes
a background worker after each write (or, with ``index_sync=True``, drains
right there, after the commit). Work that fails stays in the outbox with its
error and a backoff, and is retried; work left by a crash is drained on the
next open.

Each time the index is opened the indexer checks it against the database
(:meth:`Indexer.reconcile`): an index found empty, or holding fewer points than
the database has messages to index, gets what it lacks queued again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import attrs

from anchorline.context import Context
from anchorline.embedding import Embedder
from anchorline.errors import ConfigurationError, IndexBusy, IndexUnavailable, PluginError
from anchorline.hookspecs import hookimpl
from anchorline.memory.index.embedders import embedder_spec
from anchorline.memory.index.vector_index import Point, VectorIndex, index_location
from anchorline.memory.interface import Outbox, OutboxItem, Store
from anchorline.ops import PersistOp, UpdateContent
from anchorline.results import Hit, IndexStatus, Message, PersistResult
from anchorline.settings import Settings

from .text_extraction import message_text

log = logging.getLogger("anchorline.index")

API_KEY_ENV = "ANCHORLINE_QDRANT_API_KEY"
#: Outbox items claimed, embedded and upserted at a time...
BATCH = 512
#: ...and by ``reindex``, which reports its progress after each.
REINDEX_BATCH = 256
#: Drained batches are made durable in the index (one flush, some milliseconds) and
#: marked done together: this many items at most, held no longer than ACK_AFTER seconds.
ACK_EVERY = 4096
ACK_AFTER = 1.0


def payload(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "created_at": message.created_at,
        "metadata": message.metadata,
    }


def _check_embedder(embedder: object) -> Embedder:
    if not isinstance(embedder, Embedder) or not isinstance(embedder.dimension, int):
        raise PluginError(
            f"embedder: {embedder!r} is not an Embedder (it needs name, dimension and embed(texts))"
        )
    return embedder


class Indexer:
    """Keeps the vector index in step with the messages' outbox."""

    #: Background mode waits for writes to pause this long before it drains...
    quiet = 0.05
    #: ...but never longer than this after it was woken.
    max_delay = 0.5
    #: ``flush`` tries again after this pause, doubling while nothing drains, up to...
    retry_pause = 0.05
    #: ...this.
    max_retry_pause = 1.0

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
        self.index: VectorIndex | None = None
        self.embedder: Embedder | None = None
        self.last_error: str | None = None
        self._failing: str | None = None  # the error being reported, until indexing works again
        self._reconciled = False
        #: A refill of an index found empty when it opened: (queued, done, started, last said).
        self._refill: list[float] | None = None
        self._store: Store | None = None  # the terminal's
        self._last_write = 0.0
        self._context: Context | None = None
        self._drain_lock = threading.Lock()
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
        self.index = VectorIndex(
            self.location,
            model=self.embedder.name,
            dimension=self.embedder.dimension,
            api_key=self.settings.index_api_key or os.environ.get(API_KEY_ENV),
            spec=embedder_spec(self.embedder),
            on_open=self._index_opened,
        )
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
                self._report_failure(f"{type(e).__name__}: {e}")
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
                self._report_failure(f"{type(e).__name__}: {e}")
            except Exception:
                log.exception("index worker")

    # --- draining -----------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        """The outbox of the terminal's store."""
        assert self._store is not None
        return self._store.outbox

    def drain(self, *, force: bool = False, wait: float = 0.0) -> int:
        """Process due outbox items until none are left; returns how many were done.

        ``force`` ignores the backoff of failed items. Errors of the index or
        the embedder are recorded on the items, not raised.
        """
        assert self._store is not None and self.index is not None
        outbox = self._store.outbox
        processed = 0
        with self._drain_lock:
            if not outbox.has_due(force=force):
                return 0
            if self.index.embedded:
                try:  # fail fast (IndexBusy) before claiming
                    with self.index.session(wait=wait):
                        pass
                except (IndexBusy, ConfigurationError):
                    raise
                except IndexUnavailable:
                    pass  # the batch fails below, and its items record why
            applied: list[tuple[list[OutboxItem], int]] = []
            held = 0  # items applied, not yet acked
            since = 0.0
            try:
                while True:
                    items = outbox.claim(limit=BATCH, force=force)
                    textless = self._apply(items) if items else None
                    if textless is None:
                        return processed
                    if not applied:
                        since = time.monotonic()
                    applied.append((items, textless))
                    held += len(items)
                    if held >= ACK_EVERY or time.monotonic() - since >= ACK_AFTER:
                        processed += self._ack(applied)
                        held = 0
            finally:
                processed += self._ack(applied)

    def _ack(self, applied: list[tuple[list[OutboxItem], int]]) -> int:
        """Make the applied batches durable in the index, then mark them done; how many
        items were. Empties ``applied``."""
        assert self._store is not None and self.index is not None
        if not applied:
            return 0
        batches = list(applied)
        applied.clear()
        try:
            self.index.flush()
        except Exception as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self._report_failure(self.last_error)
            for items, _ in batches:
                self._store.outbox.failed(items, self.last_error)
            return 0
        for items, textless in batches:
            self._store.outbox.done(items, textless)
        if self._refill is not None:
            self._refill_progress(sum(len(items) for items, _ in batches))
        if self._failing is not None:
            log.info("indexing works again (it failed with %s)", self._failing)
            self._failing = None
        return sum(len(items) for items, _ in batches)

    def _process(self, items: list[OutboxItem]) -> bool:
        """Apply one batch and mark it done; whether it worked."""
        textless = self._apply(items)
        return textless is not None and self._ack([(items, textless)]) == len(items)

    def _apply(self, items: list[OutboxItem]) -> int | None:
        """Apply one batch to the index (not yet flushed); how many of its messages had no
        text, or ``None`` if it failed (the items record why)."""
        assert self._store is not None and self.index is not None and self.embedder is not None
        try:
            ids = [i.message_id for i in items if i.action != "delete"]
            messages = {m.id: m for m in self._store.get_messages(ids)}
            to_embed: list[tuple[Message, str]] = []
            deleted = [i.message_id for i in items if i.action == "delete"]
            to_delete = list(deleted)
            textless = 0
            for item in items:
                message = messages.get(item.message_id)
                if item.action == "upsert":
                    indexable = message is not None and message.status == "complete"
                    text = self._text(message) if message is not None and indexable else ""
                    if message is not None and text:
                        to_embed.append((message, text))
                    else:
                        textless += 1 if indexable else 0
                        to_delete.append(item.message_id)
                elif item.action == "payload" and message is not None:
                    self.index.set_payload(message.id, payload(message))
            if to_embed:
                vectors = self._embed([text for _, text in to_embed])
                points = zip(to_embed, vectors, strict=True)
                self.index.upsert([Point(m.id, v, payload(m)) for (m, _), v in points])
            if deleted:  # a deleted message without a point was one without text
                textless -= len(deleted) - len(self.index.existing(deleted))
            self.index.delete(to_delete)
        except Exception as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self._report_failure(self.last_error)
            self._store.outbox.failed(items, self.last_error)
            return None
        return textless

    def _embed(self, texts: list[str]) -> list[list[float]]:
        """The vectors of ``texts``, checked: one per text, each of the embedder's dimension.

        Into a folder, an embedder with ``embed_array`` (see
        :func:`array_embedder`) gives rows of one float64 array: Qdrant Edge
        reads any sequence of floats, and a row of the array spares making a
        float object for each of its components.
        """
        assert self.embedder is not None and self.index is not None
        embedder, dimension = self.embedder, self.embedder.dimension
        embed_array = array_embedder(embedder) if self.index.embedded else None
        if embed_array is not None:
            matrix = embed_array(texts)
            shape, dtype = getattr(matrix, "shape", None), getattr(matrix, "dtype", None)
            if shape != (len(texts), dimension) or dtype != "float64":
                raise PluginError(
                    f"embedder {embedder.name!r}: embed_array returned {type(matrix).__name__}"
                    f" {shape} of {dtype} for {len(texts)} texts; it must be a float64 array"
                    f" of shape ({len(texts)}, {dimension})"
                )
            flat = memoryview(matrix.reshape(-1)).cast("B").cast("d")
            rows = [flat[i : i + dimension] for i in range(0, len(flat), dimension)]
            # Typed as lists, read as sequences: the upsert reads them and keeps none.
            return cast("list[list[float]]", rows)
        vectors = embedder.embed(texts)
        if len(vectors) != len(texts) or any(len(v) != dimension for v in vectors):
            raise PluginError(
                f"embedder {embedder.name!r} returned {len(vectors)} vectors for"
                f" {len(texts)} texts, or not all of dimension {dimension}"
            )
        return [v if type(v) is list else list(v) for v in vectors]

    #: A refill taking longer than this says how far it has got, this often.
    progress_every = 5.0

    def _refill_progress(self, done: int) -> None:
        """Say how far the refill of an index found empty has got, if it takes a while."""
        assert self._refill is not None and self.index is not None
        queued, so_far, started, said = self._refill
        so_far += done
        now = time.monotonic()
        if so_far >= queued:
            self._refill = None
            (log.warning if said > started else log.info)(
                "index %s refilled from the database: %d message(s) in %.1f s",
                self.location, int(queued), now - started,
            )  # fmt: skip
            return
        if now - said >= self.progress_every:
            log.warning(
                "refilling index %s from the database: %d of %d message(s)",
                self.location, int(so_far), int(queued),
            )  # fmt: skip
            said = now
        self._refill = [queued, so_far, started, said]

    def _report_failure(self, error: str) -> None:
        """Log an indexing failure when it starts or changes, not at every retry."""
        if error != self._failing:
            log.warning("indexing failed; it is retried with backoff meanwhile: %s", error)
            self._failing = error

    def _text(self, message: Message) -> str:
        assert self._context is not None
        text = self._context.pipeline.plugin_manager.hook.index_text(
            message=message, context=self._context
        )
        return message_text(message) if text is None else str(text)

    # --- the pipeline's index API -------------------------------------------

    def status(self) -> IndexStatus:
        return self.outbox.status()

    def flush(self, timeout: float | None = None) -> IndexStatus:
        """Drain until the outbox is empty; raise :class:`IndexUnavailable` if it cannot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._reconciled:
            self._open_index()
        pause = self.retry_pause
        while True:
            remaining = 10.0 if deadline is None else max(0.0, deadline - time.monotonic())
            drained = self.drain(force=True, wait=remaining)
            current = self.status()
            if current.pending == 0:
                return current
            if deadline is None and current.failing:
                raise IndexUnavailable(
                    f"{current.pending} message(s) still waiting to be indexed:"
                    f" {current.last_error}"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise IndexUnavailable(
                    f"{current.pending} message(s) still waiting to be indexed after {timeout}s"
                    + (f": {current.last_error}" if current.last_error else "")
                )
            pause = self.retry_pause if drained else min(pause * 2, self.max_retry_pause)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def settle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for what is pending now to be indexed; how many
        of those messages are still pending then.

        What is due is drained here when the index is free; a folder another
        process holds is drained by that process meanwhile. Writes made while it
        waits are not waited for. Unlike :meth:`flush`, what is still pending
        when the time is up is not an error.
        """
        deadline = time.monotonic() + timeout
        waiting = self.outbox.pending_ids()
        force = True  # failed items are tried once more, then wait out their backoff
        while waiting:
            with contextlib.suppress(IndexBusy):
                self.drain(force=force, wait=0.0)
            force = False
            waiting &= self.outbox.pending_ids()
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            time.sleep(min(self.retry_pause, left))
        return len(waiting)

    # --- keeping the index whole --------------------------------------------

    def _open_index(self) -> None:
        """Open the index if it is free, so that it is checked before a flush relies on it."""
        assert self.index is not None
        try:
            with self.index.session(wait=0.0, what="open"):
                pass
        except IndexUnavailable:
            pass  # busy (its holder checks it) or down (the drain reports it)

    def _index_opened(self, created: bool) -> None:
        self._reconciled = True
        try:
            self.reconcile(created)
        except Exception as e:
            log.warning("could not check the index against the database: %s", e)

    def reconcile(self, created: bool = False) -> int:
        """Queue what the index lacks; returns how many messages were queued.

        ``created``: the collection was just created, so it is empty and every
        complete message not already waiting is queued. Otherwise the counts are
        compared first (cheap at any size); only when the index holds fewer
        points than the complete messages with text does it look up which are
        missing, by id, and queue those.
        """
        assert self._store is not None and self.index is not None
        outbox = self._store.outbox
        if outbox.reindex_started():
            return 0  # the reindex in progress queued everything already
        if created:
            queued = outbox.enqueue_missing()
            if queued and self.index.embedded:
                now = time.monotonic()
                self._refill = [queued, 0, now, now]
            if queued:
                (log.info if self.location == ":memory:" else log.warning)(
                    "index %s was created empty (it was new, lost or rebuilt, or the"
                    " embedder is new): queued %d complete message(s) to index",
                    self.location,
                    queued,
                )
            return queued
        counts = outbox.counts()
        if self.index.count() + counts.pending + counts.textless >= counts.complete:
            return 0
        candidates = outbox.unqueued_complete()
        present = self.index.existing(candidates)
        missing: list[str] = []
        textless = 0
        absent = [m for m in candidates if m not in present]
        for start in range(0, len(absent), 1000):
            for message in self._store.get_messages(absent[start : start + 1000]):
                if self._text(message):
                    missing.append(message.id)
                else:
                    textless += 1
        outbox.requeue(missing, textless)
        if missing:
            log.warning(
                "index %s lacked %d message(s) of the database: queued to index again",
                self.location,
                len(missing),
            )
        return len(missing)

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the index from the store; returns how many messages were indexed.

        The collection is emptied and every complete message queued, in one
        step recorded in the database. Draining then goes batch by batch, so
        an interrupted reindex resumes where it stopped when run again.
        """
        assert self.index is not None
        outbox = self.outbox
        if not outbox.reindex_started():
            self.index.recreate()
            outbox.start_reindex()
        total = self.status().pending
        if progress:
            progress(0, total)
        while True:
            with self._drain_lock:
                items = outbox.claim(limit=REINDEX_BATCH, force=True)
                if items and not self._process(items):
                    raise IndexUnavailable(f"reindex stopped: {self.last_error}")
            pending = self.status().pending
            if progress:
                progress(total - pending, total)
            if not items and pending == 0:
                break
            if not items:
                time.sleep(0.05)  # another drainer holds the rest under lease
        outbox.finish_reindex()
        return total

    def doctor(self) -> DoctorReport:
        """Compare the messages that should be indexed with the points in the index."""
        assert self._store is not None and self.index is not None
        if not self._reconciled:
            self._open_index()  # what opening re-queues then counts as pending, not missing
        indexable = {m.id for m in self._store.complete_messages() if self._text(m)}
        pending = self._store.outbox.pending_ids()
        points = self.index.message_ids()
        current = self.status()
        return DoctorReport(
            indexable=len(indexable),
            points=len(points),
            pending=current.pending,
            failing=current.failing,
            missing=sorted(indexable - points - pending),
            orphans=sorted(points - indexable - pending),
            last_error=current.last_error,
        )

    def search(self, query: str, conversation_id: str | None, limit: int) -> list[Hit]:
        assert self.index is not None and self.embedder is not None and self._context is not None
        [vector] = self.embedder.embed([query])
        found = self.index.search(list(vector), conversation_id=conversation_id, limit=limit)
        pipeline = self._context.pipeline
        hits = []
        for message_id, score in found:
            message = pipeline.get(message_id)
            if message is not None:  # deleted, and its point not yet removed
                hits.append(Hit(message=message, score=score))
        return hits


@attrs.frozen(kw_only=True)
class DoctorReport:
    """Index consistency: messages that should have a point against the points there are."""

    indexable: int
    points: int
    pending: int
    failing: int
    missing: list[str]
    orphans: list[str]
    last_error: str | None

    @property
    def clean(self) -> bool:
        return not (self.pending or self.missing or self.orphans)


def array_embedder(embedder: object) -> Callable[[list[str]], Any] | None:
    """The embedder's ``embed_array(texts)`` (one float64 row per text, as
    :meth:`~anchorline.memory.index.embedders.HashingEmbedder.embed_array`), if it has one
    and its ``embed`` is the one that goes with it: a subclass that changes only
    ``embed`` is called through ``embed``."""
    mro = type(embedder).__mro__
    owner = next((c for c in mro if "embed_array" in vars(c)), None)
    if owner is None or next((c for c in mro if "embed" in vars(c)), None) is not owner:
        return None
    method: Callable[[list[str]], Any] = cast(Any, embedder).embed_array
    return method


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
