"""Anchorline: one write path for an agent loop's conversation messages."""

from importlib import metadata as _metadata

from anchorline.memory.retry import RetryPolicy

from .aio import AsyncPipeline, AsyncStream
from .context import Context, UnitOfWork
from .embedding import Embedder
from .errors import (
    AnchorlineError,
    ArchiveUnavailable,
    ConfigurationError,
    Conflict,
    CursorExpired,
    IncompatibleStore,
    IndexBusy,
    IndexUnavailable,
    InvalidOp,
    MessageNotFound,
    PluginError,
    SnapshotCorrupt,
    SnapshotMissing,
    StorageUnavailable,
)
from .hookspecs import hookimpl, hookspec
from .limits import Limits
from .ops import Add, Compact, Delete, Forget, PersistOp, Reserve, Update, UpdateContent
from .parsing import dump_op, parse_op
from .results import (
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
from .runner import Pipeline, PipelineClosed
from .streaming import Stream
from .sweeping import SweepReport

try:
    __version__: str = _metadata.version("anchorline")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
del _metadata

__all__ = [
    "Add",
    "Added",
    "AnchorlineError",
    "ArchiveUnavailable",
    "AsyncPipeline",
    "AsyncStream",
    "Change",
    "Compact",
    "Compacted",
    "ConfigurationError",
    "Conflict",
    "ContentUpdated",
    "Context",
    "Conversation",
    "CursorExpired",
    "Delete",
    "Deleted",
    "Embedder",
    "Forget",
    "Forgotten",
    "Hit",
    "IncompatibleStore",
    "IndexBusy",
    "IndexStatus",
    "IndexUnavailable",
    "InvalidOp",
    "Limits",
    "Message",
    "MessageNotFound",
    "PersistOp",
    "PersistResult",
    "Pipeline",
    "PipelineClosed",
    "PluginError",
    "Reserve",
    "Reserved",
    "RetryPolicy",
    "SnapshotCorrupt",
    "SnapshotMissing",
    "StorageUnavailable",
    "Stream",
    "SweepReport",
    "UnitOfWork",
    "Update",
    "UpdateContent",
    "Updated",
    "__version__",
    "dump_op",
    "hookimpl",
    "hookspec",
    "parse_op",
]
