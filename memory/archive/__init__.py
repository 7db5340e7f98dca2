"""The cold tier's storage: conversations as snapshots in object storage."""

from .objects import ObjectArchive, object_name, open_archive
from .snapshot import Snapshot, decode, encode

__all__ = ["ObjectArchive", "Snapshot", "decode", "encode", "object_name", "open_archive"]
