"""A PostgreSQL database as the terminal sees it: a pool of connections, many writers."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from anchorline.errors import AnchorlineError, ConfigurationError
from anchorline.memory.interface import ConversationState, Store, Transaction
from anchorline.memory.journal import settled
from anchorline.memory.retry import RetryPolicy
from anchorline.results import Change, Conversation, Message

from . import changelog, crud
from .connection import Connections, describe, location_of, parse
from .errors import gave_up, misconfigured, refused_for_now, retryable, storage_error
from .notify import Listener, Notifier
from .outbox import PostgresOutbox
from .schema import ensure_schema, has_schema
from .transaction import PostgresTransaction, read

T = TypeVar("T")

#: Messages per query when :meth:`PostgresStore.complete_messages` streams them.
PAGE = 500


def _transient(error: psycopg.Error) -> bool:
    """Whether a failure to connect may pass on its own (the server is down, starting or
    shutting down, or full), unlike a wrong password or database name."""
    if not retryable(error):
        return False
    text = str(error)
    if misconfigured(text):  # a port out of range, a host name that does not resolve
        return False
    # No FATAL: refused, unreachable, dropped; the server may be on its way back.
    return "FATAL" not in text or refused_for_now(text)


#: The environment variable that bounds each store's pool when ``pool_max`` is not given.
POOL_MAX_ENV = "ANCHORLINE_POOL_MAX"


def missing(url: str) -> str | None:
    """Why ``url`` holds no Anchorline store yet, in one line naming the database; ``None``
    if it does. Creates nothing (for commands that only read)."""
    _pool_max_from_env()  # a bad setting is said before connecting
    params = parse(url)
    where = describe(params)
    kwargs: dict[str, Any] = {} if "connect_timeout" in params else {"connect_timeout": 10}
    try:
        with psycopg.connect(url, autocommit=True, **kwargs) as conn:
            where = describe({}, conn)
            if has_schema(conn):
                return None
    except psycopg.Error as e:
        raise storage_error(e, where) from None
    return f"no Anchorline store in {where}"


def _pool_max_from_env() -> int:
    value = os.environ.get(POOL_MAX_ENV) or "4"
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigurationError(
            f"{POOL_MAX_ENV}: must be a whole number of connections, 1 or more, got {value!r}"
        )
    return number


class PostgresStore:
    """The Anchorline tables (schema ``anchorline``) of the PostgreSQL database at ``url``.

    ``url`` is a ``postgresql://`` (or ``postgres://``) URL, or a libpq conninfo
    string. The schema is created on first open, or checked (a newer one, or a
    schema ``anchorline`` holding other tables, raises ``IncompatibleStore``);
    other schemas of the database are left alone.

    Connections come from a bounded pool of ``pool_min`` (default 1) to ``pool_max``
    (default ``$ANCHORLINE_POOL_MAX``, else 4) autocommit connections, opened here
    and closed by :meth:`close`: up to
    ``pool_max`` threads write or read at once, the others wait for a connection
    (within the policy's deadline). Each write transaction holds one connection
    until it commits or rolls back. Every server error reaches the caller as a
    one-line ``AnchorlineError`` (``StorageUnavailable`` once the ``policy`` gives
    up) naming the database and its host, never the password.
    """

    def __init__(
        self,
        url: str,
        retry: RetryPolicy | None = None,
        *,
        durability: str = "normal",
        pool_min: int = 1,
        pool_max: int | None = None,
        name: str | None = None,
    ) -> None:
        if pool_max is None:
            pool_max = _pool_max_from_env()
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ConfigurationError(
                f"pool_min, pool_max: need 0 <= pool_min <= pool_max and pool_max >= 1,"
                f" got {pool_min} and {pool_max}"
            )
        params = parse(url)
        self.policy = retry or RetryPolicy()
        #: The URL without its password.
        self.location = location_of(url, params)
        self.where = describe(params)
        self.connections = Connections(
            url,
            params,
            self.policy,
            min_size=pool_min,
            max_size=pool_max,
            name=name or f"anchorline {self.location}",
            durability=durability,
        )
        #: Whether the outbox triggers are on (writes then wake other processes' drainers).
        self.indexing = self._open_schema()
        self.connections.open()
        self._notifier = Notifier(self.connections)
        self._log_notifier = Notifier(self.connections, changelog.CHANNEL)
        self._listener = Listener(self._listen)
        self._outbox = PostgresOutbox(self, self._listener, self._notifier)

    @property
    def outbox(self) -> PostgresOutbox:
        return self._outbox

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_schema(self) -> bool:
        """Connect once outside the pool (so a refusal reads as the server said it),
        retrying while the server is unreachable, and create or check the schema."""
        started = time.monotonic()
        attempts = 1
        while True:
            try:
                with self.connections.connect() as conn:
                    self.where = describe({}, conn)
                    return ensure_schema(conn, self.where)
            except psycopg.Error as e:
                elapsed = time.monotonic() - started
                pause = self.policy.backoff(attempts)
                if not _transient(e):
                    raise storage_error(e, self.where) from None
                if attempts >= self.policy.max_attempts or elapsed + pause >= self.policy.deadline:
                    raise gave_up(e, self.where, attempts, elapsed) from None
                time.sleep(pause)
                attempts += 1

    def _listen(self, timeout: float) -> psycopg.Connection[Any]:
        return self.connections.connect(timeout=timeout)

    # --- what transactions and the outbox use -----------------------------------

    def queued(self) -> None:
        """A commit may have queued index work: wake the drainers of other processes."""
        if self.indexing:
            self._notifier.poke()

    def logged(self) -> None:
        """A commit wrote change feed rows: wake the followers of other processes."""
        self._log_notifier.poke()

    def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn`` on a pooled (autocommit) connection under the retry policy."""
        return read(self, fn)

    def write(self, fn: Callable[[crud.Executes], T], *, queues: bool = False) -> T:
        """Run ``fn`` in a write transaction of its own and commit it."""
        tx = self.begin()
        try:
            result: T = tx.run(fn, queues=queues)
        except BaseException:
            tx.rollback()
            raise
        return settled(result, tx.commit())

    # --- the Store protocol ---------------------------------------------------------

    def begin(self) -> PostgresTransaction:
        """Start a write transaction on a pooled connection (commit or roll it back)."""
        return PostgresTransaction(self)

    def begin_sole(self) -> PostgresTransaction:
        """A transaction for one write committed right after it (see ``SoleWrites``): an
        add, a reserve or a content update commits as it is written, in one round trip."""
        return PostgresTransaction(self, sole=True)

    def get_message(self, message_id: str) -> Message | None:
        return self.read(lambda c: crud.get_message(c, message_id))

    def get_messages(self, message_ids: Sequence[str]) -> list[Message]:
        """The stored messages among ``message_ids``, in no particular order."""
        return self.read(lambda c: crud.get_messages(c, message_ids))

    def list_messages(
        self,
        conversation_id: str,
        limit: int | None,
        after_seq: int | None = None,
        roles: tuple[str, ...] | None = None,
    ) -> list[Message]:
        """The conversation's messages, oldest first; ``limit`` keeps the newest ``limit``."""
        return self.read(lambda c: crud.list_messages(c, conversation_id, limit, after_seq, roles))

    def list_reserved(self, updated_before: int, limit: int) -> list[Message]:
        """Placeholders last written before ``updated_before`` (ms), oldest first."""
        return self.read(lambda c: crud.list_reserved(c, updated_before, limit))

    def complete_messages(self) -> Iterator[Message]:
        """Every complete message, in id order, a page per query (no connection is held
        between pages)."""
        after: str | None = None
        while True:
            page = self.read(partial(crud.scan, after_id=after, limit=PAGE, complete_only=True))
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].id

    def scan(self, after_id: str | None, limit: int) -> list[Message]:
        """Up to ``limit`` messages whose id sorts after ``after_id``, in id order."""
        return self.read(lambda c: crud.scan(c, after_id, limit))

    def scan_conversations(self, after_id: str | None, limit: int) -> list[ConversationState]:
        """Up to ``limit`` conversations whose id sorts after ``after_id``, in id order."""
        return self.read(lambda c: changelog.scan_conversations(c, after_id, limit))

    # --- the conversation log ---------------------------------------------------

    def changes(self, after: int, limit: int) -> list[Change]:
        return self.read(lambda c: changelog.list_changes(c, after, limit))

    def last_cursor(self) -> int:
        return self.read(changelog.last_cursor)

    def trim_changes(self, before: int) -> int:
        return self.read(lambda c: changelog.trim_changes(c, before))

    def watch(self) -> changelog.PostgresWatch:
        return changelog.PostgresWatch(self._listen)

    def conversations(
        self, limit: int | None, after: tuple[int, str] | None, parent_id: str | None
    ) -> list[Conversation]:
        return self.read(lambda c: changelog.list_conversations(c, limit, after, parent_id))

    def close(self) -> None:
        """Stop the notifier and the listener, and close every pooled connection."""
        with contextlib.suppress(AnchorlineError, psycopg.Error):
            self._log_notifier.close()
        with contextlib.suppress(AnchorlineError, psycopg.Error):
            self._notifier.close()
        self._listener.close()
        self.connections.close()


if TYPE_CHECKING:  # mypy checks here that the classes implement the protocols

    def _implements(store: PostgresStore, tx: PostgresTransaction) -> tuple[Store, Transaction]:
        return store, tx
