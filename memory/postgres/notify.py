"""Waking drainers in other processes: NOTIFY after commits, LISTEN in ``wait``.

The NOTIFY is sent by the application after the commit, from a thread of its
own, at most once per :attr:`Notifier.spacing`, not by the outbox triggers:
PostgreSQL serialises every committing transaction that has notified (a
database-wide lock held through the commit's WAL flush), which would make all
indexed writes of all machines commit one at a time. A notification is only a
hint: drainers always read the outbox itself, and poll it now and then, so a
lost one (or a write by another program) costs latency, never work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .connection import Connections

log = logging.getLogger("anchorline.postgres")

CHANNEL = "anchorline_outbox"


class Notifier:
    """Sends ``NOTIFY <channel>`` (``anchorline_outbox`` unless told) soon after
    :meth:`poke`, coalescing bursts."""

    #: The least time between two notifications, in seconds.
    spacing = 0.05

    def __init__(self, connections: Connections, channel: str = CHANNEL) -> None:
        self._connections = connections
        self._channel = channel
        self._due = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def poke(self) -> None:
        """Ask for a notification (cheap when one is already due)."""
        if self._due.is_set():
            return
        self._due.set()
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._closed.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="anchorline-pg-notify", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._closed.is_set():
                return
            self._due.clear()
            self._send()
            self._closed.wait(self.spacing)

    def _send(self) -> None:
        conn = None
        try:
            conn = self._connections.get(1.0)
            conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
        except psycopg.Error as e:  # a hint only: drainers poll as well
            log.debug("outbox notification not sent: %s", e)
            if conn is not None:
                self._connections.discard(conn)
            return
        self._connections.put(conn)

    def close(self) -> None:
        """Stop the thread (a notification due is sent first)."""
        if self._due.is_set():
            self._send()
        self._closed.set()
        self._due.set()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5.0)


class Listener:
    """A connection of its own that LISTENs, made on the first :meth:`wait`."""

    def __init__(
        self, connect: Callable[[float], psycopg.Connection[Any]], channel: str = CHANNEL
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._lost = False
        self._lock = threading.Lock()
        self._closed = False

    def listen(self, timeout: float) -> None:
        """Connect and LISTEN now rather than at the first :meth:`wait`, so nothing sent
        from now on is missed (if that fails, the first wait that connects returns True)."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return
            try:
                self._conn = self._connect(timeout)
                self._conn.execute(f"LISTEN {self._channel}")
            except psycopg.Error as e:
                log.debug("cannot listen for notifications: %s", e)
                self._drop()
                self._lost = True

    def wait(self, timeout: float) -> bool:
        """Block until a notification comes or ``timeout`` seconds pass; True if woken.

        Also True (at once) when the listening connection was lost and made again,
        since what was sent meanwhile is unknown.
        """
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=max(timeout, 0)):
            return False
        try:
            if self._closed:
                return False
            if self._conn is None or self._conn.closed:
                try:
                    self._conn = self._connect(max(deadline - time.monotonic(), 0.0))
                    self._conn.execute(f"LISTEN {self._channel}")
                except psycopg.Error as e:
                    log.debug("cannot listen for outbox notifications: %s", e)
                    self._drop()
                    time.sleep(max(deadline - time.monotonic(), 0.0))
                    return False
                if self._lost:
                    self._lost = False
                    return True
            try:
                # Never break out of notifies(): the rest of a batch would be lost.
                woken = list(
                    self._conn.notifies(timeout=max(deadline - time.monotonic(), 0.0), stop_after=1)
                )
            except psycopg.Error as e:
                log.debug("outbox listener lost its connection: %s", e)
                self._drop()
                return True
            return bool(woken)
        finally:
            self._lock.release()

    def _drop(self) -> None:
        if self._conn is not None:
            self._lost = True
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection (after a :meth:`wait` under way returns)."""
        with self._lock:
            self._closed = True
            self._drop()
