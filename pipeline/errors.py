"""Every error Anchorline raises derives from :class:`AnchorlineError`
and from the builtin it resembles, so callers can catch either."""

from __future__ import annotations


class AnchorlineError(Exception):
    """Base class of every error raised by Anchorline.

    ``op_index`` is set by ``Pipeline.persist_many`` to the position of the op
    that failed; it is ``None`` otherwise.
    """

    op_index: int | None = None


class InvalidOp(AnchorlineError, ValueError):
    """An op, or a value inside it, is malformed. The message names the field."""


class MessageNotFound(AnchorlineError, LookupError):
    """The op targets a message id that is not stored."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message_id: no message with id {message_id!r}")
        self.message_id = message_id


class Conflict(AnchorlineError, ValueError):
    """The op contradicts what is stored, e.g. a reused message id."""


class StorageUnavailable(AnchorlineError, OSError):
    """The store stayed busy or failing until the retry policy gave up.

    Nothing of the op was written. ``attempts`` is how many times it was tried
    and ``last_cause`` the error of the final attempt.
    """

    def __init__(self, message: str, *, attempts: int, last_cause: BaseException | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_cause = last_cause


class IncompatibleStore(AnchorlineError):
    """The file is not an Anchorline database, or its schema is newer than this code."""


class PluginError(AnchorlineError, TypeError):
    """A plugin does not fit: it implements a hook that does not exist (raised by
    ``Pipeline.open``), or it answered a hook with something that is not a valid
    result for the hook and op. The message names the plugin and the hook."""


class IndexUnavailable(AnchorlineError, OSError):
    """The vector index could not be reached, or no index is configured.

    Writes never raise it: their intent to index waits in the outbox.
    """


class IndexBusy(IndexUnavailable):
    """The embedded index folder stayed held by another process for longer than the wait."""


class ConfigurationError(AnchorlineError, ValueError):
    """``Pipeline.open`` was given settings that cannot work together."""


class CursorExpired(AnchorlineError, LookupError):
    """A change feed cursor points before what the feed still keeps (``trim_changes``
    removed the changes after it), so reading on from it would miss writes.

    ``oldest`` is the oldest cursor still kept: resynchronise (read the
    conversations afresh), then follow on from the feed's current end.
    """

    def __init__(self, cursor: int, oldest: int) -> None:
        super().__init__(
            f"after: cursor {cursor} is older than the change feed keeps (it was trimmed"
            f" before {oldest}): reload what you show, then read on from the newest cursor"
        )
        self.cursor = cursor
        self.oldest = oldest


class ArchiveUnavailable(AnchorlineError, OSError):
    """The object storage that holds archived conversations could not be reached, or
    refused the request (credentials, permissions): nothing was moved."""


class SnapshotMissing(AnchorlineError, LookupError):
    """The archive holds no snapshot of a conversation that should be there."""


class SnapshotCorrupt(AnchorlineError, ValueError):
    """A conversation's snapshot is not one Anchorline can read back as written: its
    checksum, format or contents are wrong. Nothing is written from it."""
