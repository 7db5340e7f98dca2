"""The runner: ``Pipeline`` sends each op through the hook chain and commits it."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

import pluggy

from . import compaction
from .changefeed import LARGEST, Follower, change_log, check_count, check_known, parse_key
from .context import Context, UnitOfWork
from .errors import (
    AnchorlineError,
    ConfigurationError,
    IndexUnavailable,
    InvalidOp,
    PluginError,
)
from .limits import DEFAULT_LIMITS, Limits
from .ops import (
    COMPACTION_ROLE,
    ROLES,
    Add,
    Compact,
    Content,
    Delete,
    Forget,
    PersistOp,
    Reserve,
    Update,
    UpdateContent,
    check_id,
)
from .parsing import parse_op
from .plugin_manager import check_messages, create_plugin_manager, culprits, register_plugins
from .results import (
    RESULT_FOR,
    Added,
    Change,
    Compacted,
    ContentUpdated,
    Conversation,
    Deleted,
    Forgotten,
    Hit,
    IndexStatus,
    Message,
    PersistResult,
    Reserved,
    Updated,
)
from .settings import Settings
from .streaming import Stream, reserve_op
from .sweeping import SweepReport, sweep

if TYPE_CHECKING:
    from anchorline.memory.retry import RetryPolicy
    from anchorline.plugins.indexer import Indexer

    from .embedding import Embedder

log = logging.getLogger("anchorline")

Expected = Mapping[str, int] | None


class PipelineClosed(AnchorlineError, RuntimeError):
    """The pipeline was used after ``close()``."""


def _as_op(op: PersistOp | Mapping[str, Any]) -> PersistOp:
    if type(op) in RESULT_FOR:
        return op  # type: ignore[return-value]
    if isinstance(op, Mapping):
        return parse_op(dict(op))
    raise InvalidOp(f"op: expected an op or a dict with a 'kind', got {type(op).__name__}")


def describe(op: PersistOp) -> str:
    """A short name for ``op`` in messages: its kind and its target, never its content."""
    message_id = getattr(op, "message_id", None)
    if message_id is not None:
        return f"{op.kind} op for message {message_id!r}"
    return f"{op.kind} op in conversation {getattr(op, 'conversation_id', '?')!r}"


def check_result(hook: pluggy.HookCaller, op: PersistOp, result: object) -> PersistResult:
    """``result`` if it is the right result for ``op``; otherwise :class:`PluginError`
    naming the hook and the plugin that answered."""
    expected = RESULT_FOR[type(op)]
    if type(result) is expected and getattr(op, "message_id", None) is None:
        return result  # the usual case: a fresh add or reserve
    if not isinstance(result, expected):
        if result is None:
            wrappers = [repr(i.plugin_name) for i in hook.get_hookimpls() if i.wrapper]
            hint = (
                f"; a wrapper=True implementation must return what its yield gave"
                f" ({', '.join(wrappers)})"
                if wrappers
                else " (is a terminal registered?)"
            )
            raise PluginError(
                f"{hook.name}: no plugin returned a result for the {describe(op)}{hint}"
            )
        raise PluginError(
            f"{hook.name}: {culprits(hook)} returned {type(result).__name__}"
            f" (kind {getattr(result, 'kind', None)!r}) for the {describe(op)};"
            f" expected {expected.__name__}"
        )
    if isinstance(result, Forgotten):
        return result
    wanted = getattr(op, "message_id", None)
    if wanted is not None:
        got = result.message_id if isinstance(result, Deleted) else result.message.id
        if got != wanted and not getattr(result, "deduplicated", False):
            raise PluginError(
                f"{hook.name}: {culprits(hook)} answered the {describe(op)} with message {got!r}"
            )
    return result


def check_expect_updated_at(expected: object) -> dict[str, int] | None:
    """``expect_updated_at`` as the dict the terminals pop from, or :class:`InvalidOp`."""
    if type(expected) is not dict and not isinstance(expected, Mapping):
        raise InvalidOp(
            "expect_updated_at: must map message ids to the updated_at you read,"
            f" got {type(expected).__name__}"
        )
    for key, value in expected.items():
        if type(key) is not str or not key:
            raise InvalidOp(f"expect_updated_at: keys are message ids (strings), got {key!r}")
        if type(value) is not int or not 0 <= value <= LARGEST:
            raise InvalidOp(
                f"expect_updated_at[{key!r}]: must be the message's updated_at"
                f" (an integer of epoch milliseconds), got {value!r}"
            )
    return dict(expected) if expected else None


def check_ops(ops: object) -> Iterable[PersistOp | Mapping[str, Any]]:
    """``ops`` if it can be a batch of ops, or :class:`InvalidOp`: not one op, a string or None."""
    if (
        ops is None
        or isinstance(ops, str | bytes | Mapping)
        or type(ops) in RESULT_FOR
        or not isinstance(ops, Iterable)
    ):
        raise InvalidOp(
            f"ops: must be a list of ops, got {type(ops).__name__} (use persist for one op)"
        )
    return ops


#: The oldest a sweep reaches, in seconds: about 30,000 years, within any timestamp.
OLDEST = 10**12


def check_older_than(older_than: object, name: str = "older_than") -> float:
    """``older_than`` if it is a number of seconds from 0 to :data:`OLDEST`, or
    :class:`InvalidOp` naming it."""
    if (
        isinstance(older_than, bool)
        or not isinstance(older_than, int | float)
        or not 0 <= older_than <= OLDEST
    ):
        raise InvalidOp(f"{name}: must be a number of seconds from 0 to 1e12, got {older_than!r}")
    return older_than


class Pipeline:
    """The one write path for conversation messages. Build it with :meth:`open`."""

    def __init__(self, settings: Settings, plugin_manager: pluggy.PluginManager) -> None:
        self.settings = settings
        self.plugin_manager = plugin_manager
        hook = plugin_manager.hook
        self._persist = hook.persist
        self._persist_batch = hook.persist_batch
        self._after_persist = hook.after_persist
        self._limits = settings.limits
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str = "anchorline.db",
        *,
        terminal: object | None = None,
        plugins: Iterable[object] | None = (),
        load_entrypoints: bool = True,
        retry: RetryPolicy | None = None,
        index: str | None = None,
        embedder: Embedder | str | None = None,
        index_api_key: str | None = None,
        index_sync: bool = False,
        index_drain: bool = True,
        vfs: str | None = None,
        limits: Limits | None = None,
        sweep_on_open: float | None = None,
        durability: str | None = None,
    ) -> Pipeline:
        """Open the pipeline on the database at ``path``: a SQLite file (or ``":memory:"``),
        or a ``postgresql://`` URL with ``anchorline[postgres]`` installed.

        ``terminal`` replaces the default terminal (no store is opened);
        ``plugins`` are extra plugin objects or modules; ``retry`` is the
        :class:`~anchorline.memory.retry.RetryPolicy` for the store's writes.

        ``index`` turns on the vector index: ``"local"`` (embedded Qdrant in a
        folder next to the database), ``":memory:"``, a folder path, or a
        Qdrant server URL (``index_api_key`` or ``$ANCHORLINE_QDRANT_API_KEY``
        for its key). ``embedder`` overrides the ``embedder`` hook: an object, or
        ``"hashing"`` or ``"openai:<model>"`` (see ``docs/embedders.md``).
        ``index_sync=True`` indexes right after each write instead of in a
        background worker. ``index_drain=False`` searches the index but leaves
        the indexing to ``anchorline index-worker`` processes (many agent
        processes on one PostgreSQL database). ``vfs`` names an apsw VFS to
        open the file with.

        ``limits`` caps the size of content and metadata per op.
        ``sweep_on_open=S`` runs :meth:`sweep` with ``older_than=S`` once open.
        ``durability="full"`` (or ``$ANCHORLINE_DURABILITY``) also survives power loss.
        """
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(
                f"path: must be a file path or a postgresql:// URL, got {type(path).__name__}"
            )
        if type(load_entrypoints) is not bool:
            raise ConfigurationError(
                f"load_entrypoints: must be True or False, got {type(load_entrypoints).__name__}"
            )
        if sweep_on_open is not None:
            sweep_on_open = check_older_than(sweep_on_open, "sweep_on_open")
        if isinstance(embedder, str):
            from anchorline.memory.index.embedders import embedder_from_spec

            embedder = embedder_from_spec(embedder)
        settings = Settings(
            path=os.fspath(path) if isinstance(path, os.PathLike) else path,
            terminal=terminal,
            retry=retry,
            index=index,
            embedder=embedder,
            index_api_key=index_api_key,
            index_sync=index_sync,
            index_drain=index_drain,
            vfs=vfs,
            limits=DEFAULT_LIMITS if limits is None else limits,
            durability=durability,
        )
        pm = create_plugin_manager()
        pipeline = cls(settings, pm)
        try:
            register_plugins(
                pm, settings, plugins=() if plugins is None else plugins,
                load_entrypoints=load_entrypoints,
            )  # fmt: skip
            pm.hook.pipeline_opened(context=Context(pipeline))
            if sweep_on_open is not None:
                pipeline.sweep(sweep_on_open)
        except BaseException:
            pipeline.close()
            raise
        return pipeline

    # --- writes -------------------------------------------------------------

    @overload
    def persist(self, op: Add, *, expect_updated_at: Expected = None) -> Added: ...
    @overload
    def persist(self, op: Reserve, *, expect_updated_at: Expected = None) -> Reserved: ...
    @overload
    def persist(
        self, op: UpdateContent, *, expect_updated_at: Expected = None
    ) -> ContentUpdated: ...
    @overload
    def persist(self, op: Update, *, expect_updated_at: Expected = None) -> Updated: ...
    @overload
    def persist(self, op: Delete, *, expect_updated_at: Expected = None) -> Deleted: ...
    @overload
    def persist(self, op: Forget, *, expect_updated_at: Expected = None) -> Forgotten: ...
    @overload
    def persist(self, op: Compact, *, expect_updated_at: Expected = None) -> Compacted: ...
    @overload
    def persist(
        self, op: PersistOp | Mapping[str, Any], *, expect_updated_at: Expected = None
    ) -> PersistResult: ...

    def persist(
        self, op: PersistOp | Mapping[str, Any], *, expect_updated_at: Expected = None
    ) -> PersistResult:
        """Send one op through the chain, commit it, and return its result.

        ``expect_updated_at`` maps message ids to the ``updated_at`` you last
        read: if the stored message has changed since, the op raises
        ``Conflict`` and nothing is written.
        """
        if self._closed:
            self._check_open()
        op = _as_op(op)
        limits = self._limits
        # An add within the limits needs no more than these two lengths.
        if (
            type(op) is not Add
            or len(op.content_json) > limits.max_content_bytes
            or len(op.metadata_json) > limits.max_metadata_bytes
        ):
            limits.check(op)
        # With no wrapper on the chain, nothing runs between the terminal's write and
        # the commit: the store may commit as it writes (one round trip to a server).
        unit = UnitOfWork(
            sole=not any(i.wrapper or i.hookwrapper for i in self._persist.get_hookimpls())
        )
        expected = None if expect_updated_at is None else check_expect_updated_at(expect_updated_at)
        context = Context(self, unit, expected)
        try:
            result = check_result(self._persist, op, self._persist(op=op, context=context))
            unit.commit()
        except BaseException:
            unit.rollback()
            raise
        if unit.corrections:
            result = unit.corrected(result)
        if self._after_persist.get_hookimpls():
            self._notify(op, result, context)
        return result

    def persist_many(
        self,
        ops: Iterable[PersistOp | Mapping[str, Any]],
        *,
        expect_updated_at: Expected = None,
    ) -> list[PersistResult]:
        """Send each op through the chain and commit them together: all or none.

        If one fails, the error's ``op_index`` says which.
        """
        self._check_open()
        expected = None if expect_updated_at is None else check_expect_updated_at(expect_updated_at)
        checked = []
        limits = self._limits
        most_content, most_metadata = limits.max_content_bytes, limits.max_metadata_bytes
        for i, op in enumerate(check_ops(ops)):
            try:
                op = _as_op(op)
                # An add within the limits needs no more than these two lengths.
                if (
                    type(op) is not Add
                    or len(op.content_json) > most_content
                    or len(op.metadata_json) > most_metadata
                ):
                    limits.check(op)
            except InvalidOp as e:
                e.op_index = i
                raise
            checked.append(op)
        unit = UnitOfWork()
        context = Context(self, unit, expected)
        results: list[PersistResult] = []
        persist = self._persist
        # One call for the whole batch when no plugin would miss an op; its errors name
        # their op themselves.
        batched = bool(checked) and self._batches()
        try:
            if batched:
                answer = self._persist_batch(ops=checked, context=context)
                results = self._check_batch(checked, answer)
            else:
                for op in checked:
                    results.append(check_result(persist, op, persist(op=op, context=context)))
            unit.commit()
        except BaseException as e:
            unit.rollback()
            if isinstance(e, AnchorlineError) and not batched and len(results) < len(checked):
                e.op_index = len(results)
            raise
        if unit.corrections:
            results = [unit.corrected(result) for result in results]
        if self._after_persist.get_hookimpls():
            for op, result in zip(checked, results, strict=True):
                self._notify(op, result, context)
        return results

    def _batches(self) -> bool:
        """Whether ``persist_batch`` may take a whole batch: some plugin implements it, and
        every plugin that implements ``persist`` does too (so none misses an op)."""
        batching = {impl.plugin for impl in self._persist_batch.get_hookimpls()}
        return bool(batching) and all(
            impl.plugin in batching for impl in self._persist.get_hookimpls()
        )

    def _check_batch(self, ops: list[PersistOp], results: object) -> list[PersistResult]:
        hook = self._persist_batch
        if type(results) is not list or len(results) != len(ops):
            got = f"{len(results)} results" if isinstance(results, list) else repr(results)
            raise PluginError(
                f"{hook.name}: {culprits(hook)} returned {got} for {len(ops)} ops;"
                " expected one result per op"
            )
        for i, (op, result) in enumerate(zip(ops, results, strict=True)):
            if type(result) is Added and type(op) is Add and op.message_id is None:
                continue  # the usual case, as check_result takes it
            try:
                check_result(hook, op, result)
            except PluginError as e:
                e.op_index = i
                raise
        return results

    # --- the agent loop's helpers --------------------------------------------

    def stream(
        self,
        conversation_id: str,
        *,
        role: str = "assistant",
        metadata: dict[str, Any] | None = None,
        flush_interval: float = 1.0,
        client_message_id: str | None = None,
    ) -> Stream:
        """Stream one message: ``with pipeline.stream("c1") as s: s.append(token)``.

        Entering reserves the message, so ``s.message_id`` is known at once.
        Partial content is written at most once per ``flush_interval`` seconds;
        ``s.flush()`` writes it now (before a long pause, say).
        A normal exit writes the final content. On an exception (cancellation
        included) what was streamed is kept, finalized with
        ``metadata.interrupted = true`` and the error's type, or the empty
        placeholder is deleted; then the exception propagates.

        Content is stored as it was written, in every write of the stream
        (partial, final or interrupted): text deltas (``s.append("Hel")``) are
        stored as one plain string, exactly what ``UpdateContent(content="Hello")``
        stores. Once a block is appended (``s.append({"type": "tool_use", ...})``)
        the content is a list of blocks: the text before it becomes a ``text``
        block, and text after it extends a trailing ``text`` block.
        ``s.set_content(...)`` sets either shape. A resumed stream
        (``client_message_id``) continues in the shape that is stored; if its
        message is already complete, ``s.complete`` is true, the stream writes
        nothing, and new content raises ``Conflict``. The final and interrupted
        writes are guarded by the ``updated_at`` the stream last wrote or saw: a
        message another writer changed since is not rewritten (``Conflict``).
        Content refused by ``Limits`` keeps what was last written, marked interrupted.
        """
        self._check_open()
        return Stream(
            self, reserve_op(conversation_id, role, metadata, client_message_id), flush_interval
        )

    def sweep(self, older_than: float = 60.0) -> SweepReport:
        """Recover placeholders whose writer is gone: ``reserved`` messages not written for
        ``older_than`` seconds. Empty ones are deleted; partial ones are finalized with
        ``metadata.interrupted = true`` (and then indexed like any complete message).

        Each runs through the pipeline as ordinary ops, guarded by the
        ``updated_at`` the sweep read, so a message written meanwhile is
        skipped, never overwritten.
        """
        self._check_open()
        return sweep(self, check_older_than(older_than))

    def _notify(self, op: PersistOp, result: PersistResult, context: Context) -> None:
        # The write is already durable: an observer's error is logged and
        # neither fails the op nor skips the other observers.
        call_each(self._after_persist, op=op, result=result, context=context)

    def forget(self, conversation_id: str) -> Forgotten:
        """Delete every message of the conversation and, through the outbox, its points
        in the index: a :class:`~anchorline.ops.Forget` op through the chain, so plugins
        see it like any write. See ``docs/ops-format.md`` for what erasure takes on
        each store."""
        return self.persist(Forget(conversation_id=conversation_id))

    def compact(
        self,
        conversation_id: str,
        summary: Content,
        first_kept_seq: int,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> Compacted:
        """Record ``summary`` as standing in for every message before ``first_kept_seq``:
        a :class:`~anchorline.ops.Compact` op through the chain. The compaction is a row of
        the log with its own seq; :meth:`context` starts from the latest one, and
        :meth:`messages` still returns every message. Refuses (:class:`InvalidOp`) a
        conversation with no messages, and a ``first_kept_seq`` below 1 or past the
        conversation's last seq + 1."""
        op = Compact(
            conversation_id=conversation_id,
            summary=summary,
            first_kept_seq=first_kept_seq,
            metadata=metadata if metadata is not None else {},
        )
        compaction.check_target(self, conversation_id, first_kept_seq)
        return self.persist(op)

    def context(self, conversation_id: str, *, as_of_seq: int | None = None) -> list[Message]:
        """What a model should see of the conversation: the latest compaction (a message of
        role ``compaction`` whose content is the summary), then the messages from its
        ``first_kept_seq`` on, in seq order. Without a compaction, every message.
        Placeholders (``reserved``: an answer still streaming, or one whose stream died)
        are left out. ``as_of_seq`` rebuilds the context as it stood once that seq was
        written."""
        self._check_open()
        check_id("conversation_id", conversation_id)
        as_of = compaction.check_as_of_seq(as_of_seq)
        return compaction.model_context(self, conversation_id, as_of)

    # --- reads --------------------------------------------------------------

    def get(self, message_id: str) -> Message | None:
        """The message with ``message_id``, or ``None``."""
        self._check_open()
        check_id("message_id", message_id)
        hook = self.plugin_manager.hook.get_message
        message = hook(message_id=message_id, context=Context(self))
        if message is not None and not isinstance(message, Message):
            raise PluginError(
                f"get_message: {culprits(hook)} returned {type(message).__name__},"
                " expected Message or None"
            )
        return message

    def messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = None,
        after_seq: int | None = None,
        roles: Iterable[str] | None = None,
    ) -> list[Message]:
        """The conversation's messages in ``seq`` order (oldest first).

        ``limit`` alone keeps the newest ``limit``; with ``after_seq`` the read
        pages forward: the first ``limit`` (or all) messages whose seq is
        greater. ``roles`` keeps only messages of those roles.
        """
        self._check_open()
        check_id("conversation_id", conversation_id)
        if limit is not None and (type(limit) is not int or not 0 <= limit <= LARGEST):
            raise InvalidOp(f"limit: must be a non-negative integer or None, got {limit!r}")
        if after_seq is not None and (type(after_seq) is not int or not 0 <= after_seq <= LARGEST):
            raise InvalidOp(f"after_seq: must be a non-negative integer or None, got {after_seq!r}")
        wanted = None if roles is None else check_roles(roles)
        hook = self.plugin_manager.hook.list_messages
        found = hook(
            conversation_id=conversation_id,
            limit=limit,
            after_seq=after_seq,
            roles=wanted,
            context=Context(self),
        )
        return check_messages(hook, found)

    # --- the conversation log (docs/conversation-log.md) ---------------------

    def changes(self, after: int = 0, limit: int = 100) -> list[Change]:
        """Up to ``limit`` committed writes with a cursor above ``after``, in commit order.

        Read on from the last change's ``cursor`` to miss nothing and repeat
        nothing, across restarts. A cursor older than what
        :meth:`trim_changes` kept raises :class:`CursorExpired`.
        """
        self._check_open()
        check_count("after", after)
        check_count("limit", limit, least=1)
        log = change_log(self.plugin_manager)
        found = log.changes(after, limit)
        if not found:
            check_known(log, after)
        return found

    def follow(self, after: int | None = None, timeout: float | None = None) -> Iterator[Change]:
        """Yield committed writes as they commit, from this process or any other.

        ``after`` is the last cursor seen (``None``: start at the feed's end).
        The iterator ends when no change came for ``timeout`` seconds (never,
        if ``None``), or once the pipeline closes.
        """
        return iter(self._follower(after, timeout))

    def _follower(self, after: int | None, timeout: float | None) -> Follower:
        self._check_open()
        if after is not None:
            check_count("after", after)
        if timeout is not None and (
            not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout < 0
        ):
            raise InvalidOp(f"timeout: must be a number of seconds >= 0 or None, got {timeout!r}")
        log = change_log(self.plugin_manager)
        if after is not None:
            check_known(log, after)
        return Follower(log, lambda: self._closed, after, timeout)

    def trim_changes(self, before: int) -> int:
        """Drop the changes with a cursor below ``before`` (the newest is always kept);
        returns how many. Reading on from an older cursor then raises CursorExpired."""
        self._check_open()
        check_count("before", before)
        return change_log(self.plugin_manager).trim_changes(before)

    def conversations(self, limit: int = 50, after: str | None = None) -> list[Conversation]:
        """Conversations, newest activity first; pass the last one's ``key`` as ``after``
        for the next page."""
        self._check_open()
        check_count("limit", limit, least=1)
        return change_log(self.plugin_manager).conversations(limit, parse_key(after), None)

    def threads(self, parent_id: str) -> list[Conversation]:
        """The conversations started from ``parent_id`` (ops that named it ``parent_id``)."""
        self._check_open()
        check_id("parent_id", parent_id)
        return change_log(self.plugin_manager).conversations(None, None, parent_id)

    # --- the vector index ---------------------------------------------------

    def indexer(self) -> Indexer:
        """The indexer plugin (for reindex, doctor); IndexUnavailable if there is no index."""
        self._check_open()
        indexer: Indexer | None = self.plugin_manager.get_plugin("indexer")
        if indexer is None:
            raise IndexUnavailable(
                "no vector index: open the pipeline with index='local', ':memory:' or a Qdrant URL"
            )
        return indexer

    def search(
        self, query: str, *, conversation_id: str | None = None, limit: int = 10
    ) -> list[Hit]:
        """The indexed messages nearest to ``query`` in meaning, best first."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidOp("query: must be a non-empty string")
        if conversation_id is not None:
            check_id("conversation_id", conversation_id)
        if type(limit) is not int or limit < 1:
            raise InvalidOp(f"limit: must be a positive integer, got {limit!r}")
        return self.indexer().search(query, conversation_id, limit)

    def flush_index(self, timeout: float | None = None) -> IndexStatus:
        """Wait until every pending index item is done.

        Raises :class:`IndexUnavailable` if items keep failing (at once when
        ``timeout`` is ``None``, else once ``timeout`` seconds have passed).
        """
        return self.indexer().flush(timeout)

    def index_status(self) -> IndexStatus:
        """How many items wait in the index outbox, the oldest, and the last error."""
        return self.indexer().status()

    # --- lifecycle ----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PipelineClosed("the pipeline is closed")

    def close(self) -> None:
        """Let plugins finish (the indexer drains what it can), then close the stores."""
        if self._closed:
            return
        self._closed = True
        call_each(self.plugin_manager.hook.pipeline_closing, context=Context(self))

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        from anchorline.memory.stores import masked

        state = "closed" if self._closed else "open"
        return f"<Pipeline {masked(self.settings.path)!r} {state}>"


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """``roles`` as a sorted tuple of known roles, or :class:`InvalidOp` naming the stranger."""
    if isinstance(roles, str | bytes) or not isinstance(roles, Iterable):
        raise InvalidOp(f"roles: must be an iterable of role names, got {roles!r}")
    wanted = set()
    for role in roles:
        if not isinstance(role, str) or (role not in ROLES and role != COMPACTION_ROLE):
            known = ", ".join(sorted({*ROLES, COMPACTION_ROLE}))
            raise InvalidOp(f"roles: {role!r} is not one of {known}")
        wanted.add(role)
    return tuple(sorted(wanted))


def call_each(hook: pluggy.HookCaller, **kwargs: Any) -> None:
    """Call every implementation of ``hook`` in order, logging (not raising) their errors."""
    impls = hook.get_hookimpls()
    if not impls:
        return
    for impl in reversed(impls):
        if impl.hookwrapper or impl.wrapper:
            log.error("%s: wrapper in plugin %r is not supported", hook.name, impl.plugin_name)
            continue
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception:
            log.exception("%s in plugin %r failed", hook.name, impl.plugin_name)
