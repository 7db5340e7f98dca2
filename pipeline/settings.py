"""Everything ``Pipeline.open`` was given, handed to each default plugin's factory."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from .errors import ConfigurationError
from .limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from anchorline.memory.retry import RetryPolicy

    from .embedding import Embedder

INDEX_FORMS = (
    "'local', ':memory:', 'none', a folder path,"
    " or a Qdrant server URL starting with http:// or https://"
)
SERVER_SCHEMES = ("http", "https")

# "name:" before any slash: a URL without its "//", or a host:port. A folder
# whose name has a colon is written "./name:x"; a Windows drive "C:\" is a path.
_URL_LIKE = re.compile(r"^[A-Za-z][\w+.-]*:")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def parse_index(value: object) -> str | None:
    """The ``index=`` setting checked: ``None`` (no index), ``"local"``,
    ``":memory:"``, a server URL (its scheme in lower case) or a folder path.

    ``"none"`` means no index, as on the command line. Anything else raises
    :class:`ConfigurationError` naming the value and the accepted forms, before
    any file or folder is created.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"index: expected a string, got {type(value).__name__}; use {INDEX_FORMS}"
        )

    def refuse(problem: str) -> ConfigurationError:
        return ConfigurationError(f"index: {value!r} {problem}; use {INDEX_FORMS}")

    if value.lower() == "none":
        return None
    if value.lower() == "local":
        return "local"
    if value == ":memory:":
        return value
    if not value.strip():
        raise refuse("is empty")
    if value != value.strip() or any(c < " " or c == "\x7f" for c in value):
        raise refuse("has surrounding spaces or control characters")
    if "://" in value:
        scheme, rest = value.split("://", 1)
        if scheme.lower() not in SERVER_SCHEMES:
            raise refuse(f"has the scheme {scheme + '://'!r}, which is not a Qdrant server's")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as e:
            raise refuse(f"is not a valid URL ({e})") from None
        if not parts.hostname:
            raise refuse("names no host")
        return f"{scheme.lower()}://{rest}"
    if _URL_LIKE.match(value) and not _DRIVE.match(value):
        raise refuse(
            "looks like a URL or host:port, not a folder (write ./ before a folder name with a ':')"
        )
    path = os.path.expanduser(value)
    if os.path.exists(path) and not os.path.isdir(path):
        raise refuse("is a file, not a folder")
    return path


@attrs.frozen(kw_only=True)
class Settings:
    """The options of one pipeline. ``terminal`` is the caller's replacement, if any.

    ``index`` is checked by :func:`parse_index` when the settings are built.
    """

    path: str
    terminal: Any = None
    retry: RetryPolicy | None = None
    index: str | None = attrs.field(default=None, converter=parse_index)
    embedder: Embedder | None = None
    index_api_key: str | None = None
    index_sync: bool = False
    index_drain: bool = True
    vfs: str | None = None
    limits: Limits = DEFAULT_LIMITS
    durability: str | None = None
