"""Streaming an assistant message: reserve on entry, debounced partial flushes, final on exit."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from .errors import AnchorlineError, Conflict, InvalidOp
from .ops import Content, Delete, PersistOp, Reserve, Update, UpdateContent
from .results import ContentUpdated, Message, Reserved

if TYPE_CHECKING:
    from .context import PipelineView

log = logging.getLogger("anchorline")


def _copy(content: Content) -> Content:
    return content if isinstance(content, str) else [dict(block) for block in content]


class StreamState:
    """What a stream has produced so far, and the ops that record it. Does no I/O.

    Shared by the blocking :class:`Stream` and the asyncio ``AsyncStream``.
    The content keeps the shape it was written in: text deltas join into one
    string, the content ``UpdateContent(content=text)`` stores; appending a
    block turns it into blocks (the text so far becomes a leading ``text``
    block, and later text extends a trailing one); ``set_content`` sets either
    shape. Partial flushes, the final write and the interrupted one all write
    :attr:`content`.

    The final write and the interrupted one are guarded (:attr:`guard`) by the
    ``updated_at`` of the last write the stream made or saw, so a message that
    another writer changed since (a retried stream with the same
    ``client_message_id``) is never rewritten: the write raises ``Conflict``.
    """

    def __init__(
        self,
        message_id: str,
        flush_interval: float,
        resume_from: Content | None = None,
        *,
        complete: bool = False,
        updated_at: int | None = None,
    ) -> None:
        self.message_id = message_id
        self.flush_interval = flush_interval
        #: Whether the message was already complete (a retried turn that had finished):
        #: its stored content stands, and the stream writes nothing.
        self.complete = complete
        # A fresh placeholder's [] holds nothing yet: text deltas start a string.
        self._content: Content = _copy(resume_from) if resume_from else ""
        # Text deltas wait here until the content is needed: joining them once is
        # cheaper than rebuilding the trailing text block for every token.
        self._text: list[str] = []
        self._dirty = False
        self._last_flush = time.monotonic()
        #: The ``updated_at`` of the last write this stream made or saw (None: unknown).
        self.updated_at = updated_at
        # The content the store last accepted from this stream (or held on entry).
        self._written: Content = _copy(resume_from) if resume_from else ""

    @property
    def guard(self) -> dict[str, int] | None:
        """``expect_updated_at`` for the final and the interrupted write."""
        return None if self.updated_at is None else {self.message_id: self.updated_at}

    def wrote(self, written: ContentUpdated) -> None:
        """Note the store's answer to a partial flush: the content it accepted, and when."""
        self.updated_at = written.message.updated_at
        self._written = written.message.content

    def overtaken(self, error: Conflict) -> Conflict:
        """The ``Conflict`` a write of this stream raised, told as what it means here."""
        return Conflict(
            f"message {self.message_id!r} was changed by another writer (a retried stream"
            " with the same client_message_id?) since this stream last wrote it; its stored"
            f" content stands, and this stream's was not written ({error})"
        )

    def _join_text(self) -> Content:
        if self._text:
            text = "".join(self._text)
            self._text.clear()
            if isinstance(self._content, str):
                self._content += text
            elif self._content and self._content[-1].get("type") == "text":
                last = self._content[-1]
                self._content[-1] = {**last, "text": str(last.get("text", "")) + text}
            else:
                self._content.append({"type": "text", "text": text})
        return self._content

    @property
    def content(self) -> Content:
        return _copy(self._join_text())

    @property
    def streamed(self) -> bool:
        """Whether anything was produced (an empty string or no blocks is nothing)."""
        return bool(self._join_text())

    def _check_open(self) -> None:
        if self.complete:
            raise Conflict(
                f"message {self.message_id!r} is already complete: this stream's"
                " client_message_id names a turn that finished, and its stored content"
                " stands; check s.complete before streaming"
            )

    def append(self, delta: str | dict[str, Any]) -> UpdateContent | None:
        """Add a text delta or a content block; returns a partial flush when one is due."""
        self._check_open()
        if isinstance(delta, str):
            self._text.append(delta)
        elif isinstance(delta, dict) and isinstance(delta.get("type"), str):
            content = self._join_text()
            if isinstance(content, str):
                self._content = content = [{"type": "text", "text": content}] if content else []
            content.append(dict(delta))
        else:
            raise InvalidOp(
                "delta: must be a text string or a content block (a dict with a string 'type'),"
                f" got {type(delta).__name__}"
            )
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval:
            return self.flush()
        return None

    def set_content(self, content: Content) -> UpdateContent | None:
        """Replace everything produced so far; returns a partial flush when one is due."""
        self._check_open()
        UpdateContent(message_id=self.message_id, content=content)  # validates
        self._text.clear()
        self._content = _copy(content)
        self._dirty = True
        return self._due()

    def _due(self) -> UpdateContent | None:
        if time.monotonic() - self._last_flush >= self.flush_interval:
            return self.flush()
        return None

    def flush(self) -> UpdateContent | None:
        """The partial flush of what is not yet written, if anything."""
        self._check_open()
        if not self._dirty:
            return None
        self._dirty = False
        self._last_flush = time.monotonic()
        return UpdateContent(message_id=self.message_id, content=self.content, final=False)

    def finish(self) -> list[PersistOp]:
        """The final write (none for a message that was already complete)."""
        if self.complete:
            return []
        return [UpdateContent(message_id=self.message_id, content=self.content, final=True)]

    def abort(self, error: BaseException, *, written_only: bool = False) -> list[PersistOp]:
        """Keep what was streamed, marked interrupted; drop an empty placeholder.

        ``written_only`` keeps only the content the store last accepted (for when
        the content streamed since was refused, e.g. over ``Limits``).
        """
        if self.complete:
            return []
        content = _copy(self._written) if written_only else self.content
        if not content:
            return [Delete(message_id=self.message_id)]
        return [
            Update(
                message_id=self.message_id,
                metadata={"interrupted": True, "error": type(error).__name__},
            ),
            UpdateContent(message_id=self.message_id, content=content, final=True),
        ]


def reserve_op(
    conversation_id: str,
    role: str,
    metadata: dict[str, Any] | None,
    client_message_id: str | None,
) -> Reserve:
    return Reserve(
        conversation_id=conversation_id,
        role=role,
        metadata={} if metadata is None else metadata,
        client_message_id=client_message_id,
    )


class StreamHandle:
    """What the blocking and the asyncio stream handles share: the reserve, and the state."""

    def __init__(self, reserve: Reserve, flush_interval: float) -> None:
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or not flush_interval >= 0
        ):
            raise InvalidOp(
                f"flush_interval: must be a number of seconds >= 0, got {flush_interval!r}"
            )
        self._reserve = reserve
        self._flush_interval = flush_interval
        self._state: StreamState | None = None
        self.message: Message | None = None

    @property
    def state(self) -> StreamState:
        if self._state is None:
            raise RuntimeError("use the stream as a context manager: with pipeline.stream(...)")
        return self._state

    @property
    def message_id(self) -> str:
        return self.state.message_id

    @property
    def content(self) -> Content:
        """What was produced so far (a copy)."""
        return self.state.content

    @property
    def complete(self) -> bool:
        """Whether the message was already complete on entry: a retried turn (same
        ``client_message_id``) that had finished. ``message`` is then the stored
        message, the stream refuses new content (``Conflict``) and writes nothing."""
        return self.state.complete

    def _start(self, reserved: Reserved) -> None:
        # A retried reserve (same client_message_id) resumes from what is stored.
        self.message = reserved.message
        resume = reserved.message.content if reserved.deduplicated else None
        complete = reserved.deduplicated and reserved.message.status == "complete"
        self._state = StreamState(
            reserved.message.id,
            self._flush_interval,
            resume,
            complete=complete,
            updated_at=reserved.message.updated_at,
        )

    def _kept_written(self, refused: InvalidOp, ops: list[PersistOp]) -> None:
        kept = (
            "deleted its empty placeholder"
            if ops and ops[0].kind == "delete"
            else "kept the content last written, marked interrupted"
        )
        log.warning(
            "stream %s: its content was refused (%s); %s", self.state.message_id, refused, kept
        )

    def _abort_failed(self, error: Exception) -> None:
        # The original error matters more; a sweep recovers a placeholder left reserved.
        if isinstance(error, AnchorlineError):  # its message says it all in one line
            log.warning(
                "could not finalise interrupted stream %s: %s", self.state.message_id, error
            )
        else:
            log.exception("could not finalise interrupted stream %s", self.state.message_id)


class Stream(StreamHandle):
    """The handle :meth:`Pipeline.stream` yields. ``message_id`` is known on entry."""

    def __init__(self, pipeline: PipelineView, reserve: Reserve, flush_interval: float) -> None:
        super().__init__(reserve, flush_interval)
        self._pipeline = pipeline

    def __enter__(self) -> Stream:
        self._start(cast(Reserved, self._pipeline.persist(self._reserve)))
        return self

    def append(self, delta: str | dict[str, Any]) -> None:
        """Add a text delta or a content block; flushes at most once per ``flush_interval``."""
        op = self.state.append(delta)
        if op is not None:
            self._write(op)

    def set_content(self, content: Content) -> None:
        """Replace the content produced so far."""
        self._write(self.state.set_content(content))

    def flush(self) -> None:
        """Write the partial content now, if anything is unwritten."""
        self._write(self.state.flush())

    def _write(self, op: UpdateContent | None) -> None:
        if op is not None:
            try:
                written = self._pipeline.persist(op)
            except Conflict as e:  # the message is complete: another writer finished it
                raise self.state.overtaken(e) from e
            self.state.wrote(cast(ContentUpdated, written))

    def _final(self, ops: list[PersistOp]) -> None:
        if ops:
            try:
                self._pipeline.persist_many(ops, expect_updated_at=self.state.guard)
            except Conflict as e:
                raise self.state.overtaken(e) from e

    def _abort(self, error: BaseException) -> None:
        try:
            try:
                self._final(self.state.abort(error))
            except InvalidOp as refused:
                ops = self.state.abort(error, written_only=True)
                self._final(ops)
                self._kept_written(refused, ops)
        except Exception as e:
            self._abort_failed(e)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._abort(exc)
            return
        try:
            self._final(self.state.finish())
        except Conflict:
            raise  # another writer's write stands
        except Exception as e:
            self._abort(e)  # e.g. content over the limits: keep what was written
            raise
