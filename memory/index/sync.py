"""The index kept in step with a store's outbox: draining it (embed, upsert, then one flush
and the items marked done), reconciling the index with the database when it opens,
reindexing, the doctor's comparison, and search.

The store records each intent to index in the same transaction as the message write
(its :class:`~anchorline.memory.interface.Outbox`). :class:`IndexSync` turns those
intents into points. Work that fails stays in the outbox with its error and a backoff,
and is retried; work left by a crash is drained on the next open. When and on which
thread it drains is the indexer plugin's business (``anchorline.plugins.indexer``).

Each time the index is opened it is checked against the database
(:meth:`IndexSync.reconcile`): an index found empty, or holding fewer points than the
database has messages to index, gets what it lacks queued again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import attrs

from anchorline.embedding import Embedder
from anchorline.errors import ConfigurationError, IndexBusy, IndexUnavailable, PluginError
from anchorline.results import Hit, IndexStatus, Message

from ..interface import Outbox, OutboxItem, Store
from .embedders import embedder_spec
from .vector_index import Point, VectorIndex

log = logging.getLogger("anchorline.index")

#: Outbox items claimed, embedded and upserted at a time...
BATCH = 512
#: ...and by ``reindex``, which reports its progress after each.
REINDEX_BATCH = 256
#: Drained batches are made durable in the index (one flush, some milliseconds) and
#: marked done together: this many items at most, held no longer than ACK_AFTER seconds.
ACK_EVERY = 4096
ACK_AFTER = 1.0


def payload(message: Message) -> dict[str, Any]:
    """What the index keeps beside a message's vector."""
    return {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "created_at": message.created_at,
        "metadata": message.metadata,
    }


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


class IndexSync:
    """Keeps the vector index at ``location`` in step with the outbox of ``store``.

    ``text`` gives the text to embed of a message (empty: nothing to index);
    ``get`` reads a message the way the pipeline does, for the hits of a search.
    The store's outbox must be enabled before: opening the index may queue work.
    """

    #: A refill taking longer than this says how far it has got, this often.
    progress_every = 5.0
    #: ``flush`` tries again after this pause, doubling while nothing drains, up to...
    retry_pause = 0.05
    #: ...this.
    max_retry_pause = 1.0

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        location: str,
        *,
        api_key: str | None,
        text: Callable[[Message], str],
        get: Callable[[str], Message | None],
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.location = location
        self.text = text
        self._get = get
        self.last_error: str | None = None
        self._failing: str | None = None  # the error being reported, until indexing works again
        self._reconciled = False
        #: A refill of an index found empty when it opened: (queued, done, started, last said).
        self._refill: list[float] | None = None
        self._drain_lock = threading.Lock()
        self.index = VectorIndex(
            location,
            model=embedder.name,
            dimension=embedder.dimension,
            api_key=api_key,
            spec=embedder_spec(embedder),
            on_open=self._index_opened,
        )

    def __repr__(self) -> str:
        return f"IndexSync({self.location!r})"

    @property
    def outbox(self) -> Outbox:
        return self.store.outbox

    # --- draining -----------------------------------------------------------

    def drain(self, *, force: bool = False, wait: float = 0.0) -> int:
        """Process due outbox items until none are left; returns how many were done.

        ``force`` ignores the backoff of failed items. Errors of the index or
        the embedder are recorded on the items, not raised.
        """
        outbox = self.store.outbox
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
        if not applied:
            return 0
        batches = list(applied)
        applied.clear()
        try:
            self.index.flush()
        except Exception as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self.report_failure(self.last_error)
            for items, _ in batches:
                self.store.outbox.failed(items, self.last_error)
            return 0
        for items, textless in batches:
            self.store.outbox.done(items, textless)
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
        try:
            ids = [i.message_id for i in items if i.action != "delete"]
            messages = {m.id: m for m in self.store.get_messages(ids)}
            to_embed: list[tuple[Message, str]] = []
            deleted = [i.message_id for i in items if i.action == "delete"]
            to_delete = list(deleted)
            textless = 0
            for item in items:
                message = messages.get(item.message_id)
                if item.action == "upsert":
                    indexable = message is not None and message.status == "complete"
                    text = self.text(message) if message is not None and indexable else ""
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
            self.report_failure(self.last_error)
            self.store.outbox.failed(items, self.last_error)
            return None
        return textless

    def _embed(self, texts: list[str]) -> list[list[float]]:
        """The vectors of ``texts``, checked: one per text, each of the embedder's dimension.

        Into a folder, an embedder with ``embed_array`` (see
        :func:`array_embedder`) gives rows of one float64 array: Qdrant Edge
        reads any sequence of floats, and a row of the array spares making a
        float object for each of its components.
        """
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

    def _refill_progress(self, done: int) -> None:
        """Say how far the refill of an index found empty has got, if it takes a while."""
        assert self._refill is not None
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

    def report_failure(self, error: str) -> None:
        """Log an indexing failure when it starts or changes, not at every retry."""
        if error != self._failing:
            log.warning("indexing failed; it is retried with backoff meanwhile: %s", error)
            self._failing = error

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
        outbox = self.store.outbox
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
            for message in self.store.get_messages(absent[start : start + 1000]):
                if self.text(message):
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
        if not self._reconciled:
            self._open_index()  # what opening re-queues then counts as pending, not missing
        indexable = {m.id for m in self.store.complete_messages() if self.text(m)}
        pending = self.store.outbox.pending_ids()
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
        [vector] = self.embedder.embed([query])
        found = self.index.search(list(vector), conversation_id=conversation_id, limit=limit)
        hits = []
        for message_id, score in found:
            message = self._get(message_id)
            if message is not None:  # deleted, and its point not yet removed
                hits.append(Hit(message=message, score=score))
        return hits


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
