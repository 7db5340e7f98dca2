"""The server's address as users see it, and the store's bounded pool of connections."""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from anchorline.errors import ConfigurationError
from anchorline.memory.retry import RetryPolicy

from .errors import first_line

#: Connections are autocommit: a read is one statement and one round trip, and a
#: write transaction is begun explicitly (see ``transaction.py``).
_SESSION = {"autocommit": True}
_SECRETS = frozenset({"password", "sslpassword"})
_SLICE = 0.5  # seconds: see Connections.get


class PooledConnection(psycopg.Connection[Any]):
    """A connection of the pool, with the cursor its lone writes reuse (making a psycopg
    cursor costs more than the rest of such a write's work in Python)."""

    write_cursor: psycopg.Cursor[Any] | None = None


def parse(url: str) -> dict[str, Any]:
    """The connection parameters in ``url`` (a ``postgresql://`` URL or a libpq conninfo)."""
    try:
        return conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise ConfigurationError(
            f"location: not a PostgreSQL URL ({first_line(e)}): use"
            " postgresql://user@host:port/dbname"
        ) from None


def location_of(url: str, params: dict[str, Any]) -> str:
    """``url`` without its password, to name the store in messages and logs."""
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, hosts = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}@{hosts}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _SECRETS])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    shown = {k: str(v) for k, v in params.items() if k not in _SECRETS and v is not None}
    dbname = shown.pop("dbname", "")
    user = shown.pop("user", "")
    who = f"{quote(user, safe='')}@" if user else ""
    query = f"?{urlencode(shown)}" if shown else ""
    return f"postgresql://{who}/{quote(dbname, safe='')}{query}"


def describe(params: dict[str, Any], conn: psycopg.Connection[Any] | None = None) -> str:
    """The database as messages name it: ``PostgreSQL database NAME on HOST[:PORT]``.

    From the connection when there is one (what libpq actually reached), else from
    the parameters and libpq's environment variables.
    """
    if conn is not None and not conn.closed:
        host, port, dbname = conn.info.host, str(conn.info.port), conn.info.dbname
    else:
        host = str(params.get("host") or os.environ.get("PGHOST") or "the local socket")
        port = str(params.get("port") or os.environ.get("PGPORT") or "")
        dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or "")
        dbname = dbname or str(params.get("user") or os.environ.get("PGUSER") or "(default)")
    at = host if host.startswith("/") or not port or port == "5432" else f"{host}:{port}"
    return f"PostgreSQL database {dbname} on {at}"


class Connections:
    """A bounded ``psycopg_pool.ConnectionPool`` of autocommit connections.

    Connections are not checked when handed out (a check is a round trip, about
    40 µs, on every write): a dead one fails its first statement, and the caller
    retries on another (see ``transaction.py``) after :meth:`discard`.
    """

    def __init__(
        self,
        url: str,
        params: dict[str, Any],
        policy: RetryPolicy,
        *,
        min_size: int,
        max_size: int,
        name: str,
        durability: str = "normal",
    ) -> None:
        self.url = url
        self.kwargs: dict[str, Any] = dict(_SESSION)
        if "connect_timeout" not in params:  # else a blackholed host hangs for minutes
            self.kwargs["connect_timeout"] = max(2, math.ceil(min(policy.deadline, 10.0)))
        if "application_name" not in params:  # names the store's sessions in pg_stat_activity
            self.kwargs["application_name"] = "anchorline"
        # Like SQLite's busy_timeout: how long one attempt waits for a row lock.
        self._configure_sql = f"SET lock_timeout = {policy.busy_timeout_ms}"
        if durability == "full":  # else the server's own setting
            self._configure_sql += "; SET synchronous_commit = on"
        self.pool = psycopg_pool.ConnectionPool(
            url,
            connection_class=PooledConnection,
            kwargs=self.kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=self._configure,
            name=name,
            timeout=policy.deadline,
            # See get(): the pool's own reconnection gives up fast, and waiting
            # writers start new ones.
            reconnect_timeout=1.0,
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self._configure_sql)

    def connect(self, *, timeout: float | None = None) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool (for the schema and for LISTEN)."""
        kwargs = dict(self.kwargs)
        if timeout is not None:
            kwargs["connect_timeout"] = max(2, math.ceil(timeout))
        conn = psycopg.connect(self.url, **kwargs)
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        self.pool.open(wait=False)

    def get(self, timeout: float) -> psycopg.Connection[Any]:
        """A pooled connection; ``PoolTimeout`` when none comes within ``timeout`` seconds.

        The pool retries a lost connection with a backoff that doubles from 1 s
        (its own, not settable), and a client already waiting never makes it try
        sooner: after an outage of a minute, writers would wait a minute more for a
        server that is back. So the pool gives up on a connection after a second
        (``reconnect_timeout``), and a writer waits in slices, each of which lets the
        pool start a new connection: it reconnects within about a second of the
        server's return.
        """
        deadline = time.monotonic() + timeout
        while True:
            wait = deadline - time.monotonic()
            try:
                return self.pool.getconn(timeout=max(min(wait, _SLICE), 0.001))
            except psycopg_pool.PoolTimeout:
                if wait <= _SLICE:
                    raise

    def put(self, conn: psycopg.Connection[Any]) -> None:
        self.pool.putconn(cast(PooledConnection, conn))

    def discard(self, conn: psycopg.Connection[Any]) -> None:
        """Close ``conn`` and give its slot back: the pool opens a new connection."""
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            self.pool.putconn(cast(PooledConnection, conn))

    def probe(self) -> str | None:
        """Why a new connection cannot be made now, or ``None`` if one can."""
        try:
            self.connect(timeout=2).close()
        except psycopg.Error as e:
            return first_line(e)
        return None

    def close(self) -> None:
        self.pool.close(timeout=5.0)
