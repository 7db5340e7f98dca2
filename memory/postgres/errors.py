"""Which psycopg errors are worth another attempt, and how every one reads to a user.

psycopg's error classes are flat (``SerializationFailure`` is not a
``TransactionRollback``, ``AdminShutdown`` is a plain ``OperationalError``
subclass), and a connection that failed or dropped raises ``OperationalError``
with no SQLSTATE at all, so errors are told apart by SQLSTATE and by the state
of the connection, not by class.
"""

from __future__ import annotations

import psycopg
import psycopg_pool

from anchorline.errors import StorageUnavailable

#: The server rolled the transaction back and the connection is fine: run it again.
#: (serialization failure, deadlock, lock_timeout, from the RetryPolicy's busy_timeout)
RETRY_IN_PLACE = frozenset({"40001", "40P01", "55P03"})
#: The connection is gone or refused for now: take another one and run it again.
#: (admin shutdown and crash shutdown of the server, "cannot connect now" while it
#: starts, too many connections; class 08 is added by :func:`retryable`)
RETRY_ELSEWHERE = frozenset({"57P01", "57P02", "57P03", "53300"})

_HINTS = {
    "40001": "transactions kept conflicting (serialization failure)",
    "40P01": "transactions kept deadlocking",
    "55P03": (
        "a row or table stayed locked by another transaction: retry later, or give the"
        " RetryPolicy a longer busy_timeout or deadline"
    ),
    "53300": "the server has no connection slot left: lower pool_max, or raise max_connections",
    "53100": "the server's disk is full: free space on it, then retry",
    "25006": "the server is read-only (a standby?): point the URL at the primary",
    "42501": "grant this user the privilege, or open the store once as the database's owner",
}


def retryable(error: BaseException) -> bool:
    """Whether ``error`` may pass if the work is done again (on another connection)."""
    if isinstance(error, psycopg_pool.PoolClosed):
        return False
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    code = error.sqlstate
    if code is None:  # a dropped or refused connection, or a pool out of connections
        return True
    return code in RETRY_IN_PLACE or code in RETRY_ELSEWHERE or code.startswith("08")


def refused_for_now(text: str) -> bool:
    """Whether a server's refusal to connect (a FATAL at login) may pass on its own: it is
    starting, shutting down or recovering, or has no connection slot left."""
    return any(
        hint in text
        for hint in ("starting up", "shutting down", "recovery", "too many clients", "terminat")
    )


#: libpq's words for a URL that cannot work however long one waits (no SQLSTATE
#: tells these from a server that is down).
_MISCONFIGURED = (
    "invalid port number",
    "invalid integer value",
    "invalid sslmode value",
    "invalid connection option",
    "failed to resolve host",
    "could not translate host name",
)


def misconfigured(text: str) -> bool:
    """Whether a failure to connect comes of the URL itself (a port out of range, a host
    name that does not resolve, a bad parameter), so that retrying cannot help."""
    return any(words in text for words in _MISCONFIGURED)


def keeps_connection(error: BaseException) -> bool:
    """Whether the connection that raised ``error`` can be used again after a ROLLBACK."""
    return isinstance(error, psycopg.Error) and error.sqlstate in RETRY_IN_PLACE


def first_line(error: BaseException) -> str:
    """The server's (or libpq's) message without its DETAIL, HINT and context lines."""
    primary = error.diag.message_primary if isinstance(error, psycopg.Error) else None
    text = (primary or str(error) or type(error).__name__).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    for prefix in ("connection failed: ", "connection is bad: "):
        line = line.removeprefix(prefix)
    return " ".join(line.split())


def explain(error: BaseException, probe: str | None = None) -> str:
    """``error`` as a reason a user can act on. ``probe``: what connecting anew said,
    for a pool that ran out of connections (``None``: connecting works)."""
    if isinstance(error, psycopg_pool.PoolTimeout):
        if probe is not None:
            return f"cannot connect: {probe}: check that the server runs and is reachable"
        return "every pooled connection stayed busy: raise pool_max, or end transactions sooner"
    if isinstance(error, psycopg_pool.PoolClosed):
        return "the store is closed: open it again"
    code = error.sqlstate if isinstance(error, psycopg.Error) else None
    line = first_line(error)
    if code is None and misconfigured(str(error)):
        return f"cannot connect: {line}: check the URL's host, port and parameters"
    if code in _HINTS:
        return f"{line}: {_HINTS[code]}"
    if code is None and "FATAL:" in line and not refused_for_now(line):
        return (
            f"the server refused the connection ({line.partition('FATAL: ')[2]}):"
            " check the URL's user, password and database name"
        )
    if code is None and isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return f"connection lost or refused ({line}): check that the server runs and is reachable"
    if code in RETRY_ELSEWHERE or (code or "").startswith("08"):
        return f"connection lost ({line}): check that the server runs and is reachable"
    return f"{line} (SQLSTATE {code})" if code else line


def storage_error(error: BaseException, where: str, probe: str | None = None) -> StorageUnavailable:
    """A psycopg ``error`` on the database ``where`` as one line (never the password)."""
    return StorageUnavailable(
        f"storage error on {where}: {explain(error, probe)}", attempts=1, last_cause=error
    )


def gave_up(
    error: BaseException, where: str, attempts: int, seconds: float, probe: str | None = None
) -> StorageUnavailable:
    """The retry policy ran out on ``error``: one line naming the server and the cause."""
    return StorageUnavailable(
        f"{where} unavailable after {attempts} attempt(s) in {seconds:.2f}s:"
        f" {explain(error, probe)}",
        attempts=attempts,
        last_cause=error,
    )
