"""The conversation log as the pipeline shows it: the change feed, following it, and
the conversations (docs/conversation-log.md).

The log is kept by the terminal's store (``terminal.log``, the ``ChangeLog``
protocol of ``anchorline.memory.interface``), not by the hook chain: it records
what reached the store, so a write a plugin answered itself is not in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from .errors import ConfigurationError, CursorExpired, InvalidOp
from .ops import check_id
from .results import Change

if TYPE_CHECKING:
    import pluggy

    from anchorline.memory.interface import ChangeLog, Watch

#: The longest a follower sleeps before it looks again whether it should stop, and
#: before it reads the feed even without a wake-up (a lost notification costs this).
RECHECK = 0.25
REREAD = 2.0


def change_log(plugin_manager: pluggy.PluginManager) -> ChangeLog:
    """The terminal's log, or :class:`ConfigurationError` if the terminal keeps none."""
    terminal = plugin_manager.get_plugin("terminal")
    log: ChangeLog | None = getattr(terminal, "log", None)
    if log is None:
        raise ConfigurationError(
            f"the terminal {type(terminal).__name__} keeps no change log: use the default"
            " store terminal or InMemoryTerminal"
        )
    return log


#: The largest count or cursor a store can hold (a signed 64-bit integer).
LARGEST = 2**63 - 1


def check_count(name: str, value: object, *, least: int = 0) -> int:
    """``value`` if it is an int of at least ``least``, else :class:`InvalidOp` naming it."""
    if type(value) is not int or not least <= value <= LARGEST:
        raise InvalidOp(f"{name}: must be an integer from {least} to 2**63-1, got {value!r}")
    return value


def check_known(log: ChangeLog, after: int) -> None:
    """Refuse a cursor past the feed's newest: it came from another database (or one
    restored from an older backup), and reading on from it would skip what comes next."""
    if after and after > (newest := log.last_cursor()):
        raise InvalidOp(
            f"after: cursor {after} is past the newest change ({newest}) of this database:"
            " a cursor from another database, or from before a restore? Reload what you"
            " show, then read on from the newest cursor"
        )


def parse_key(after: object) -> tuple[int, str] | None:
    """A ``Conversation.key`` page token as ``(last_at, id)``."""
    if after is None:
        return None
    if isinstance(after, str):
        at, sep, conversation_id = after.partition(":")
        digits = at[1:] if at.startswith("-") else at
        if sep and conversation_id and digits.isascii() and digits.isdigit():
            last_at = int(at)
            if -LARGEST - 1 <= last_at <= LARGEST:
                return last_at, check_id("after", conversation_id)
    raise InvalidOp(
        f"after: must be a Conversation.key (like '1700000000000:trip-42'), got {after!r}"
    )


class Follower:
    """Yields the feed's changes as they commit; :meth:`stop` (from any thread) or the
    pipeline closing ends it within :data:`RECHECK` seconds."""

    def __init__(
        self,
        log: ChangeLog,
        closed: Callable[[], bool],
        after: int | None,
        timeout: float | None,
        limit: int = 100,
    ) -> None:
        self._log = log
        self._closed = closed
        self._after = after
        self._timeout = timeout
        self._limit = limit
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def _ending(self) -> bool:
        return self._stopped.is_set() or self._closed()

    def __iter__(self) -> Generator[Change, None, None]:
        watch = self._log.watch()  # before the first read, so no commit slips between
        try:
            cursor = self._log.last_cursor() if self._after is None else self._after
            idle_since = time.monotonic()
            while not self._ending():
                try:
                    batch = self._log.changes(cursor, self._limit)
                except CursorExpired:
                    raise
                except Exception:
                    if self._ending():  # the store closed under the read
                        return
                    raise
                for change in batch:
                    yield change
                    cursor = change.cursor
                if batch:
                    idle_since = time.monotonic()
                elif not self._sleep(watch, idle_since):
                    return
        finally:
            watch.close()

    def _sleep(self, watch: Watch, idle_since: float) -> bool:
        """Wait for a commit: True to read the feed again, False to end."""
        slept_since = time.monotonic()
        while not self._ending():
            now = time.monotonic()
            step = RECHECK
            if self._timeout is not None:
                remaining = idle_since + self._timeout - now
                if remaining <= 0:
                    return False
                step = min(step, remaining)
            if watch.wait(step) or time.monotonic() - slept_since >= REREAD:
                return True
        return False
