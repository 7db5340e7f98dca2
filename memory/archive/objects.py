"""Where archived conversations live: an object store reached through obstore.

obstore (Rust's ``object_store``, the crate behind Apache Arrow's and DataFusion's
object access) speaks S3 and every S3-protocol server, Google Cloud Storage,
Azure Blob Storage, a local folder and memory through one small API, with
atomic puts, its own retries and timeouts, and no SDK per cloud. Each
conversation is one object, ``conversations/<name>.snapshot``, written whole:
a reader never sees half of one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from anchorline.errors import ArchiveUnavailable, ConfigurationError, SnapshotMissing

try:
    import obstore
    from obstore.exceptions import BaseError
    from obstore.store import LocalStore, MemoryStore, from_url
except ImportError:  # pragma: no cover - the archive extra is not installed
    obstore = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from obstore.store import ObjectStore

#: A conversation id kept as it is in its object's name; any other is base64url-encoded
#: behind a ``~``, which such an id never holds, so two ids never share a name; one
#: whose encoding would not fit a file name (255 bytes) is named by its SHA-256 behind
#: ``~~`` (a snapshot records its conversation's id, and reading one checks it).
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_URL = re.compile(r"(s3|s3a|gs|az|azure|abfs|abfss|adl|file|memory)://", re.IGNORECASE)
#: How long one request may take, and how long its retries together, before the
#: archive is called unavailable.
TIMEOUT = timedelta(seconds=10)
CONNECT_TIMEOUT = timedelta(seconds=2)


def object_name(conversation_id: str) -> str:
    """The path of ``conversation_id``'s snapshot in the archive."""
    if _PLAIN_ID.fullmatch(conversation_id):
        name = conversation_id
    else:
        encoded = base64.urlsafe_b64encode(conversation_id.encode()).decode().rstrip("=")
        name = "~" + encoded
        if len(name) > 200:
            name = "~~" + hashlib.sha256(conversation_id.encode()).hexdigest()
    return f"conversations/{name}.snapshot"


class ObjectArchive:
    """Snapshots of conversations in an object store, one object per conversation."""

    def __init__(self, location: str, store: ObjectStore) -> None:
        self.location = location
        self._store = store

    def __repr__(self) -> str:
        return f"ObjectArchive({self.location!r})"

    def put(self, conversation_id: str, data: bytes) -> None:
        """Store ``data`` as the conversation's snapshot, replacing an older one."""
        try:
            obstore.put(self._store, object_name(conversation_id), data, use_multipart=False)
        except (BaseError, OSError) as e:
            raise self._unavailable("store the snapshot of", conversation_id, e) from None

    def get(self, conversation_id: str) -> bytes:
        """The conversation's snapshot; :class:`SnapshotMissing` if there is none."""
        try:
            return bytes(obstore.get(self._store, object_name(conversation_id)).bytes())
        except FileNotFoundError:
            raise SnapshotMissing(
                f"archive {self.location} holds no snapshot of conversation"
                f" {conversation_id!r} ({object_name(conversation_id)})"
            ) from None
        except (BaseError, OSError) as e:
            raise self._unavailable("read the snapshot of", conversation_id, e) from None

    def exists(self, conversation_id: str) -> bool:
        try:
            obstore.head(self._store, object_name(conversation_id))
        except FileNotFoundError:
            return False
        except (BaseError, OSError) as e:
            raise self._unavailable("look for the snapshot of", conversation_id, e) from None
        return True

    def delete(self, conversation_id: str) -> None:
        """Remove the conversation's snapshot; nothing happens if there is none."""
        try:
            obstore.delete(self._store, object_name(conversation_id))
        except FileNotFoundError:
            return
        except (BaseError, OSError) as e:
            raise self._unavailable("delete the snapshot of", conversation_id, e) from None

    def _unavailable(
        self, doing: str, conversation_id: str, error: Exception
    ) -> ArchiveUnavailable:
        reason = " ".join(str(error).split(" Debug source")[0].split())
        if len(reason) > 300:
            reason = reason[:300] + "..."
        return ArchiveUnavailable(
            f"archive {self.location}: could not {doing} conversation {conversation_id!r}: {reason}"
        )


def open_archive(location: str) -> ObjectArchive:
    """The archive at ``location``: a folder (created if missing), ``memory://``, or an
    object store URL (``s3://bucket/prefix``, ``gs://…``, ``az://…``, ``file:///…``).

    Credentials and endpoints come from the environment, as each cloud's own tools read
    them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``,
    …). :class:`ConfigurationError` names ``archive`` for a location that is none of
    these, or when obstore is not installed.
    """
    if obstore is None:  # pragma: no cover - the archive extra is not installed
        raise ConfigurationError(
            "archive: the cold tier needs obstore: pip install 'anchorline[archive]'"
        )
    if not isinstance(location, str) or not location.strip():
        raise ConfigurationError(
            f"archive: must be a folder or an object store URL, got {location!r}"
        )
    if location.lower().startswith("memory://"):
        return ObjectArchive(location, MemoryStore())
    if _URL.match(location):
        return ObjectArchive(location, _from_url(location))
    if "://" in location or location.startswith(("http:", "https:")):
        raise ConfigurationError(
            f"archive: {location!r} is not a location the cold tier can use: give a folder,"
            " memory://, or an s3://, gs://, az:// or file:// URL"
        )
    folder = Path(location).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"archive: {location!r} is a file, not a folder")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            f"archive: cannot create the folder {location!r}: {e.strerror}"
        ) from None
    return ObjectArchive(location, LocalStore(prefix=folder.resolve()))


def _from_url(location: str) -> ObjectStore:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    try:
        return from_url(
            location,
            client_options={
                "timeout": TIMEOUT,
                "connect_timeout": CONNECT_TIMEOUT,
                "allow_http": endpoint.startswith("http://"),
            },
            retry_config={"max_retries": 3, "retry_timeout": TIMEOUT},
        )
    except (BaseError, ValueError) as e:
        raise ConfigurationError(f"archive: {location!r}: {' '.join(str(e).split())}") from None
