"""``InMemoryTerminal``: the store terminal's contract, kept in dicts.

For test suites that want a real pipeline without a file. It keeps the same
statuses, idempotency, errors and all-or-none units of work as the store
terminal on SQLite; a contract test suite runs over both so they cannot drift.
"""

from __future__ import annotations

import bisect
import copy
import json
import threading
from collections.abc import Callable
from typing import Any

import attrs

from anchorline.context import Context
from anchorline.errors import Conflict, MessageNotFound
from anchorline.hookspecs import hookimpl
from anchorline.ids import clock, new_message_id, wall_ms
from anchorline.memory.changelog import check_cursor
from anchorline.memory.rows import check_expected, check_replay, compaction_message, completed
from anchorline.ops import (
    COMPACTION_ROLE,
    Add,
    Compact,
    Delete,
    Forget,
    PersistOp,
    Reserve,
    Update,
    UpdateContent,
)
from anchorline.results import (
    Added,
    Change,
    Compacted,
    ContentUpdated,
    Conversation,
    Deleted,
    Forgotten,
    Message,
    PersistResult,
    Reserved,
    Status,
    Updated,
)


def _detached(message: Message) -> Message:
    """A copy the caller may mutate without touching the store, as with SQLite."""
    return attrs.evolve(
        message, content=copy.deepcopy(message.content), metadata=copy.deepcopy(message.metadata)
    )


def _detach(result: PersistResult) -> PersistResult:
    message = getattr(result, "message", None)
    return result if message is None else attrs.evolve(result, message=_detached(message))  # type: ignore[arg-type]


class _Undo:
    """The in-memory share of a unit of work: undo steps, and the terminal's lock."""

    def __init__(self, lock: threading.RLock, committed: Callable[[], None]) -> None:
        lock.acquire()
        self._lock: threading.RLock | None = lock
        self._committed = committed
        self.steps: list[Callable[[], None]] = []

    def commit(self) -> None:
        wrote = bool(self.steps)
        self.steps.clear()
        self._release()
        if wrote:
            self._committed()

    def rollback(self) -> None:
        for step in reversed(self.steps):
            step()
        self.steps.clear()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@attrs.define
class _Conversation:
    """A conversation's row: its parent, the next seq, its count and activity times."""

    id: str
    parent_id: str | None
    next_seq: int
    message_count: int
    first_at: int
    last_at: int


class InMemoryTerminal:
    """A terminal that keeps messages in memory. Register it with ``terminal=``."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        self.conversations: dict[str, _Conversation] = {}
        self.feed: list[Change] = []
        self._cursor = 0
        self._trimmed_before = 0
        self._commits = 0
        self._closed = False
        self._changed = threading.Condition()
        self._deleted: Message | None = None  # what the last delete removed, for the feed
        self._client_ids: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"InMemoryTerminal({len(self.messages)} messages)"

    # --- write path ---------------------------------------------------------

    @hookimpl(trylast=True)
    def persist(self, op: PersistOp, context: Context) -> PersistResult:
        expected = None
        if context.expected and not isinstance(op, Add | Reserve | Forget | Compact):
            expected = context.expected.pop(op.message_id, None)
        if context.unit is None:
            undo = _Undo(self._lock, self._committed)
            try:
                result = self._log(self._apply(op, undo, expected), undo)
            except BaseException:
                undo.rollback()
                raise
            undo.commit()
            return _detach(result)
        undo = context.unit.join(self, lambda: _Undo(self._lock, self._committed))
        return _detach(self._log(self._apply(op, undo, expected), undo))

    def _log(self, result: PersistResult, undo: _Undo) -> PersistResult:
        """Append the write to the change feed (nothing for a write that wrote nothing)."""
        if isinstance(result, Forgotten):
            return result  # each message's delete is in the feed already
        if isinstance(result, Compacted):
            message = result.message
            self._append("add", message, message.updated_at, True, undo)
            return result
        if isinstance(result, Deleted):
            gone = self._deleted
            if not result.existed or gone is None:
                return result
            self._append("delete", gone, wall_ms(), False, undo)
            return result
        if isinstance(result, Added | Reserved) and result.deduplicated:
            return result
        message = result.message
        kind = result.kind
        self._append(kind, message, message.updated_at, message.status == "complete", undo)
        return result

    def _append(self, kind: Any, message: Message, at: int, final: bool, undo: _Undo) -> None:
        if self.feed:  # as every store does: ``at`` never goes back in cursor order
            at = max(at, self.feed[-1].at)
        self._cursor += 1
        self.feed.append(
            Change(
                cursor=self._cursor,
                kind=kind,
                message_id=message.id,
                conversation_id=message.conversation_id,
                seq=message.seq,
                at=at,
                final=final,
            )
        )

        def drop() -> None:
            self.feed.pop()
            self._cursor -= 1

        undo.steps.append(drop)

    def _committed(self) -> None:
        with self._changed:
            self._commits += 1
            self._changed.notify_all()

    def _apply(self, op: PersistOp, undo: _Undo, expected: int | None) -> PersistResult:
        if isinstance(op, Add):
            stored, fresh = self._insert(op, json.loads(op.content_json), "complete", undo)
            return Added(message=stored, deduplicated=not fresh)
        if isinstance(op, Reserve):
            stored, fresh = self._insert(op, [], "reserved", undo)
            return Reserved(message=stored, deduplicated=not fresh)
        if isinstance(op, UpdateContent):
            current = self._stored(op.message_id, expected)
            if not op.final and current.status == "complete":
                raise Conflict(
                    f"final: message {op.message_id!r} is already complete; a partial update"
                    " (final=false) cannot reopen it"
                )
            message = self._replace(
                current,
                undo,
                content=json.loads(op.content_json),
                status="complete" if op.final else "reserved",
            )
            return ContentUpdated(message=message)
        if isinstance(op, Update):
            current = self._stored(op.message_id, expected)
            metadata = {**current.metadata, **json.loads(op.metadata_json)}
            return Updated(message=self._replace(current, undo, metadata=metadata))
        if isinstance(op, Delete):
            existing = self.messages.get(op.message_id)
            self._deleted = existing
            if existing is not None:
                check_expected(existing, expected)
                self._remove(existing, undo)
            return Deleted(message_id=op.message_id, existed=existing is not None)
        if isinstance(op, Forget):
            return self._forget(op, undo)
        if isinstance(op, Compact):
            return self._compact(op, undo)
        raise TypeError(f"not an op: {op!r}")

    def _insert(
        self, op: Add | Reserve, content: Any, status: Status, undo: _Undo
    ) -> tuple[Message, bool]:
        if op.client_message_id is not None:
            known = self._client_ids.get((op.conversation_id, op.client_message_id))
            if known is not None:
                stored = self.messages[known]
                check_replay(stored, op)
                if isinstance(op, Add) and stored.status == "reserved":
                    # The add lands its content in its own placeholder, as in SQLite.
                    message = completed(stored, content, json.loads(op.metadata_json), wall_ms())
                    self._put(message, undo)
                    return message, True
                return stored, False
        message_id = op.message_id or new_message_id()
        if message_id in self.messages:
            raise Conflict(f"message_id: a message with id {message_id!r} already exists")
        now = clock.now()
        message = Message(
            id=message_id,
            conversation_id=op.conversation_id,
            role=op.role,
            content=content,
            metadata=json.loads(op.metadata_json),
            status=status,
            client_message_id=op.client_message_id,
            created_at=now,
            updated_at=now,
            seq=self._next_seq(op, now, undo),
        )
        self._put(message, undo)
        return message, True

    def _next_seq(self, op: Add | Reserve | Compact, now: int, undo: _Undo) -> int:
        """Hand out the conversation's next seq, counting the new message."""
        row = self.conversations.get(op.conversation_id)
        if row is None:
            cid = op.conversation_id
            parent_id = None if isinstance(op, Compact) else op.parent_id
            row = self.conversations[cid] = _Conversation(cid, parent_id, 1, 0, now, now)
            undo.steps.append(lambda: self.conversations.__delitem__(cid))
        else:
            before = attrs.evolve(row)
            undo.steps.append(lambda: self.conversations.__setitem__(before.id, before))
        seq = row.next_seq
        row.next_seq += 1
        row.message_count += 1
        row.last_at = max(row.last_at, now)
        return seq

    def _replace(self, current: Message, undo: _Undo, **changes: Any) -> Message:
        now = max(wall_ms(), current.updated_at + 1)
        message = attrs.evolve(current, updated_at=now, **changes)
        self._put(message, undo)
        return message

    def _put(self, message: Message, undo: _Undo) -> None:
        previous = self.messages.get(message.id)
        self._store(message)
        if previous is None:
            undo.steps.append(lambda: self._unstore(message))
        else:
            undo.steps.append(lambda: self._store(previous))

    def _remove(self, message: Message, undo: _Undo) -> None:
        self._unstore(message)
        row = self.conversations[message.conversation_id]
        before = attrs.evolve(row)
        row.message_count -= 1
        undo.steps.append(lambda: self.conversations.__setitem__(before.id, before))
        undo.steps.append(lambda: self._store(message))

    def _store(self, message: Message) -> None:
        self.messages[message.id] = message
        if message.client_message_id is not None:
            self._client_ids[(message.conversation_id, message.client_message_id)] = message.id

    def _unstore(self, message: Message) -> None:
        del self.messages[message.id]
        if message.client_message_id is not None:
            del self._client_ids[(message.conversation_id, message.client_message_id)]

    def _stored(self, message_id: str, expected: int | None = None) -> Message:
        message = self.messages.get(message_id)
        if message is None:
            raise MessageNotFound(message_id)
        check_expected(message, expected)
        return message

    def _forget(self, op: Forget, undo: _Undo) -> Forgotten:
        doomed = [m for m in self.messages.values() if m.conversation_id == op.conversation_id]
        at = wall_ms()
        for message in sorted(doomed, key=lambda m: m.seq):
            self._remove(message, undo)
            self._append("delete", message, at, False, undo)
        return Forgotten(conversation_id=op.conversation_id, deleted=len(doomed))

    def _compact(self, op: Compact, undo: _Undo) -> Compacted:
        now = clock.now()
        seq = self._next_seq(op, now, undo)
        message = compaction_message(op, new_message_id(), now, seq)
        self._put(copy.deepcopy(message), undo)
        return Compacted(message=message)

    @hookimpl
    def index_text(self, message: Message, context: Context) -> str | None:
        """A compaction has no text to index: its summary stands in for messages that are
        indexed themselves."""
        return "" if message.role == COMPACTION_ROLE else None

    # --- reads --------------------------------------------------------------

    @hookimpl(trylast=True)
    def get_message(self, message_id: str, context: Context) -> Message | None:
        with self._lock:
            message = self.messages.get(message_id)
        return None if message is None else _detached(message)

    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        context: Context | None = None,
        after_seq: int | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> list[Message]:
        """The conversation's messages in seq order (``Pipeline.messages``'s arguments).

        Callable directly by a plugin that redirects reads here.
        """
        with self._lock:
            found = [
                m
                for m in self.messages.values()
                if m.conversation_id == conversation_id
                and (after_seq is None or m.seq > after_seq)
                and (m.role in roles if roles is not None else m.role != COMPACTION_ROLE)
            ]
        found.sort(key=lambda m: m.seq)
        if limit is not None:
            if after_seq is not None:
                found = found[:limit]
            else:
                found = found[max(len(found) - limit, 0) :] if limit else []
        return [_detached(m) for m in found]

    # The hook takes every argument (pluggy passes none that has a default).
    @hookimpl(trylast=True, specname="list_messages")
    def _list_messages_hook(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None,
        roles: tuple[str, ...] | None,
        context: Context,
    ) -> list[Message]:
        return self.list_messages(conversation_id, limit, context, after_seq, roles)

    @hookimpl(trylast=True)
    def list_reserved(self, updated_before: int, limit: int, context: Context) -> list[Message]:
        with self._lock:
            stale = [
                m
                for m in self.messages.values()
                if m.status == "reserved" and m.updated_at < updated_before
            ]
        return sorted(stale, key=lambda m: m.updated_at)[:limit]

    # --- the conversation log (the ChangeLog protocol) ----------------------

    @property
    def log(self) -> _MemoryLog:
        """The terminal's change feed and conversations (the ``ChangeLog`` protocol)."""
        return _MemoryLog(self)

    @hookimpl
    def pipeline_closing(self, context: Context) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class _MemoryLog:
    """An :class:`InMemoryTerminal`'s conversation log."""

    def __init__(self, terminal: InMemoryTerminal) -> None:
        self._terminal = terminal

    def changes(self, after: int, limit: int) -> list[Change]:
        terminal = self._terminal
        with terminal._lock:
            check_cursor(after, terminal._trimmed_before)
            feed = terminal.feed
            start = bisect.bisect_right(feed, after, key=lambda c: c.cursor)
            return feed[start : start + limit]

    def last_cursor(self) -> int:
        return self._terminal._cursor

    def trim_changes(self, before: int) -> int:
        terminal = self._terminal
        with terminal._lock:
            bound = min(before, terminal._cursor)
            if bound <= terminal._trimmed_before:
                return 0
            kept = [c for c in terminal.feed if c.cursor >= bound]
            removed = len(terminal.feed) - len(kept)
            terminal.feed[:] = kept
            terminal._trimmed_before = bound
            return removed

    def watch(self) -> _MemoryWatch:
        return _MemoryWatch(self._terminal)

    def conversations(
        self, limit: int | None, after: tuple[int, str] | None, parent_id: str | None
    ) -> list[Conversation]:
        with self._terminal._lock:
            rows = [
                Conversation(
                    id=c.id,
                    message_count=c.message_count,
                    first_at=c.first_at,
                    last_at=c.last_at,
                    parent_id=c.parent_id,
                )
                for c in self._terminal.conversations.values()
                if parent_id is None or c.parent_id == parent_id
            ]
        rows.sort(key=lambda c: (c.last_at, c.id), reverse=True)
        if after is not None:
            rows = [c for c in rows if (c.last_at, c.id) < after]
        return rows if limit is None else rows[:limit]


class _MemoryWatch:
    """Wakes a follower when the terminal commits a write."""

    def __init__(self, terminal: InMemoryTerminal) -> None:
        self._terminal = terminal
        self._seen = terminal._commits

    def wait(self, timeout: float) -> bool:
        terminal = self._terminal
        with terminal._changed:
            woken = terminal._changed.wait_for(
                lambda: terminal._commits != self._seen or terminal._closed, timeout
            )
            self._seen = terminal._commits
            return woken

    def close(self) -> None:
        pass
