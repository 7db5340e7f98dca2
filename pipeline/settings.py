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
    if problem := _text_problem(value):
        raise refuse(problem)
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


def _text_problem(value: str) -> str | None:
    """What makes ``value`` unfit for a path or a name: a NUL, or a lone surrogate."""
    if "\x00" in value:
        return "contains a NUL character (\\x00)"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "contains a lone surrogate, not valid text"
    return None


def _path(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    problem = _text_problem(value)
    if problem:
        raise ConfigurationError(f"path: {value!r} {problem}")


def _optional(kind: type, name: str) -> Any:
    """A validator taking ``None`` or an instance of ``kind`` (``name`` says which)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise ConfigurationError(
                f"{attribute.name}: must be {name} or None, got {type(value).__name__}"
            )
        if isinstance(value, str) and (problem := _text_problem(value)):
            raise ConfigurationError(f"{attribute.name}: {value!r} {problem}")

    return check


def _flag(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ConfigurationError(
            f"{attribute.name}: must be True or False, got {type(value).__name__}"
        )


def _retry(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    from anchorline.memory.retry import RetryPolicy

    if value is not None and not isinstance(value, RetryPolicy):
        raise ConfigurationError(
            f"retry: must be a RetryPolicy or None, got {type(value).__name__}"
        )


@attrs.frozen(kw_only=True)
class Settings:
    """The options of one pipeline. ``terminal`` is the caller's replacement, if any.

    ``index`` is checked by :func:`parse_index` when the settings are built.
    """

    path: str = attrs.field(validator=_path)
    terminal: Any = None
    retry: RetryPolicy | None = attrs.field(default=None, validator=_retry)
    index: str | None = attrs.field(default=None, converter=parse_index)
    embedder: Embedder | None = None
    index_api_key: str | None = attrs.field(default=None, validator=_optional(str, "a string"))
    index_sync: bool = attrs.field(default=False, validator=_flag)
    index_drain: bool = attrs.field(default=True, validator=_flag)
    vfs: str | None = attrs.field(default=None, validator=_optional(str, "a VFS name"))
    limits: Limits = attrs.field(default=DEFAULT_LIMITS, validator=_optional(Limits, "Limits"))
    durability: str | None = attrs.field(
        default=None, validator=_optional(str, "'normal' or 'full'")
    )
