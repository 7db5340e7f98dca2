"""asyncio: ``AsyncPipeline`` runs every call on one writer thread per pipeline.

The event loop never blocks on SQLite. Cancelling a task that awaits an op
cannot leave the op half-applied: an op that has not started is dropped, and
one that has started runs to its commit (or rollback) on the writer thread. A
cancelled caller that needs to know which happened can repeat the op with the
same ``client_message_id``, which is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, cast

from .errors import Conflict, InvalidOp
from .ops import Content, PersistOp, Reserve, UpdateContent
from .results import (
    Change,
    Compacted,
    ContentUpdated,
    Conversation,
    Forgotten,
    Hit,
    IndexStatus,
    Message,
    PersistResult,
    Reserved,
)
from .runner import Expected, Pipeline, check_ops
from .streaming import StreamHandle, reserve_op
from .sweeping import SweepReport

T = TypeVar("T")
log = logging.getLogger("anchorline")


class AsyncPipeline:
    """An asyncio front for :class:`Pipeline`. Build it with ``await AsyncPipeline.open(...)``."""

    def __init__(self, pipeline: Pipeline, executor: ThreadPoolExecutor) -> None:
        self.pipeline = pipeline
        self._executor = executor

    @classmethod
    async def open(cls, path: str = "anchorline.db", **options: Any) -> AsyncPipeline:
        """Open a :class:`Pipeline` (same arguments) on a new writer thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anchorline-writer")
        try:
            loop = asyncio.get_running_loop()
            pipeline = await loop.run_in_executor(executor, partial(Pipeline.open, path, **options))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(pipeline, executor)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def persist(
        self, op: PersistOp | Mapping[str, Any], *, expect_updated_at: Expected = None
    ) -> PersistResult:
        return await self._run(self.pipeline.persist, op, expect_updated_at=expect_updated_at)

    async def persist_many(
        self, ops: Iterable[PersistOp | Mapping[str, Any]], *, expect_updated_at: Expected = None
    ) -> list[PersistResult]:
        # Read on the caller's thread: a generator may not be safe to consume on the writer's.
        return await self._run(
            self.pipeline.persist_many, list(check_ops(ops)), expect_updated_at=expect_updated_at
        )

    async def changes(self, after: int = 0, limit: int = 100) -> list[Change]:
        return await self._run(self.pipeline.changes, after, limit)

    async def follow(
        self, after: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[Change]:
        """:meth:`Pipeline.follow` as an async iterator. It waits on a thread of its own
        (not the writer's); leaving the loop or cancelling stops that thread."""
        follower = self.pipeline._follower(after, timeout)
        changes = iter(follower)
        loop = asyncio.get_running_loop()
        try:
            while True:
                change = await loop.run_in_executor(None, next, changes, None)
                if change is None:
                    return
                yield change
        finally:
            follower.stop()
            with contextlib.suppress(ValueError):  # still waiting on its thread: it ends soon
                changes.close()

    async def conversations(self, limit: int = 50, after: str | None = None) -> list[Conversation]:
        return await self._run(self.pipeline.conversations, limit, after)

    async def threads(self, parent_id: str) -> list[Conversation]:
        return await self._run(self.pipeline.threads, parent_id)

    async def get(self, message_id: str) -> Message | None:
        return await self._run(self.pipeline.get, message_id)

    async def messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        after_seq: int | None = None,
        roles: Iterable[str] | None = None,
    ) -> list[Message]:
        roles = None if roles is None else list(roles)
        return await self._run(
            self.pipeline.messages, conversation_id, limit=limit, after_seq=after_seq, roles=roles
        )

    async def search(
        self, query: str, *, conversation_id: str | None = None, limit: int = 10
    ) -> list[Hit]:
        return await self._run(
            self.pipeline.search, query, conversation_id=conversation_id, limit=limit
        )

    async def flush_index(self, timeout: float | None = None) -> IndexStatus:
        return await self._run(self.pipeline.flush_index, timeout)

    async def index_status(self) -> IndexStatus:
        return await self._run(self.pipeline.index_status)

    async def sweep(self, older_than: float = 60.0) -> SweepReport:
        return await self._run(self.pipeline.sweep, older_than)

    async def forget(self, conversation_id: str) -> Forgotten:
        """:meth:`Pipeline.forget <anchorline.Pipeline.forget>` in a worker thread."""
        return await self._run(self.pipeline.forget, conversation_id)

    async def compact(
        self,
        conversation_id: str,
        summary: Content,
        first_kept_seq: int,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> Compacted:
        """:meth:`Pipeline.compact <anchorline.Pipeline.compact>` in a worker thread."""
        return await self._run(
            self.pipeline.compact, conversation_id, summary, first_kept_seq, metadata=metadata
        )

    async def context(self, conversation_id: str, *, as_of_seq: int | None = None) -> list[Message]:
        """:meth:`Pipeline.context <anchorline.Pipeline.context>` in a worker thread."""
        return await self._run(self.pipeline.context, conversation_id, as_of_seq=as_of_seq)

    def stream(
        self,
        conversation_id: str,
        *,
        role: str = "assistant",
        metadata: dict[str, Any] | None = None,
        flush_interval: float = 1.0,
        client_message_id: str | None = None,
    ) -> AsyncStream:
        """``async with apipeline.stream("c1") as s: await s.append(token)``; see
        :meth:`Pipeline.stream`."""
        return AsyncStream(
            self, reserve_op(conversation_id, role, metadata, client_message_id), flush_interval
        )

    async def aclose(self) -> None:
        try:
            await self._run(self.pipeline.close)
        finally:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncStream(StreamHandle):
    """The handle ``AsyncPipeline.stream`` yields; ``message_id`` is known on entry."""

    def __init__(self, apipeline: AsyncPipeline, reserve: Reserve, flush_interval: float) -> None:
        super().__init__(reserve, flush_interval)
        self._apipeline = apipeline

    async def __aenter__(self) -> AsyncStream:
        reserved = await self._apipeline.persist(self._reserve)
        assert isinstance(reserved, Reserved)
        self._start(reserved)
        return self

    async def append(self, delta: str | dict[str, Any]) -> None:
        """Add a text delta or a block; awaits only when a partial flush is due."""
        await self._write(self.state.append(delta))

    async def set_content(self, content: Content) -> None:
        await self._write(self.state.set_content(content))

    async def flush(self) -> None:
        await self._write(self.state.flush())

    async def _write(self, op: UpdateContent | None) -> None:
        if op is not None:
            try:
                written = await self._apipeline.persist(op)
            except Conflict as e:  # the message is complete: another writer finished it
                raise self.state.overtaken(e) from e
            self.state.wrote(cast(ContentUpdated, written))

    async def _final(self, ops: list[PersistOp]) -> None:
        if not ops:
            return
        write = asyncio.ensure_future(
            self._apipeline.persist_many(ops, expect_updated_at=self.state.guard)
        )
        try:
            # Shielded: a second cancellation while finalising must not drop the write.
            await asyncio.shield(write)
        except Conflict as e:
            raise self.state.overtaken(e) from e

    async def _abort(self, error: BaseException) -> None:
        try:
            try:
                await self._final(self.state.abort(error))
            except InvalidOp as refused:
                ops = self.state.abort(error, written_only=True)
                await self._final(ops)
                self._kept_written(refused, ops)
        except Exception as e:
            self._abort_failed(e)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            await self._abort(exc)
            return
        try:
            await self._final(self.state.finish())
        except Conflict:
            raise  # another writer's write stands
        except Exception as e:
            await self._abort(e)  # e.g. content over the limits: keep what was written
            raise
