"""Which store a location names, and opening it: the one place that knows the stores.

A ``postgresql://`` (or ``postgres://``) URL is a PostgreSQL database; anything
else is a SQLite file (or ``":memory:"``). Each store is imported by name when a
location needs it, so a store whose driver is not installed costs nothing until
it is asked for.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anchorline.errors import ConfigurationError, StorageUnavailable

from .durability import resolve_durability as resolve_durability

if TYPE_CHECKING:
    from .interface import Store
    from .retry import RetryPolicy

#: The stores that a URL names: its schemes, the store class as ``module:class``,
#: and the extra to install for it. Every other location (a file path,
#: ``":memory:"``, a ``file:`` URI) is a SQLite file.
STORES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("postgresql", "postgres"), "anchorline.memory.postgres:PostgresStore", "postgres"),
)

#: Where each store lists its driver's errors that mean the database failed.
FAILURES = ("anchorline.memory.sqlite.errors:FAILURES",)


@functools.cache
def storage_failures() -> tuple[type[BaseException], ...]:
    """The errors that mean the store failed, not the op: ``StorageUnavailable``, and the
    driver errors a store would translate into it, should one escape untranslated."""
    found: list[type[BaseException]] = [StorageUnavailable]
    for target in FAILURES:
        module, _, name = target.partition(":")
        try:
            found.extend(getattr(importlib.import_module(module), name))
        except ImportError:
            continue  # a store whose driver is not installed raises none of its errors
    return tuple(found)


#: A store's scheme and a colon, then not the two slashes of a URL: ``postgresql:/x@h/db``.
_NEAR_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(?!//)")
_SECRET_PARAMETER = re.compile(r"(?i)(\b(?:ssl)?password=)[^&\s]*")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*:/{0,2}[^\s/@]*@")


def masked(location: str) -> str:
    """``location`` as it may be shown: a URL's password (and a ``password=`` parameter)
    replaced by ``***``. Anything else is returned as it is."""
    scheme, colon, rest = location.partition(":")
    if colon and "@" in rest and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        slashes = len(rest) - len(rest.lstrip("/"))
        netloc, slash, path = rest[slashes:].partition("/")
        if "@" in netloc:
            user, _, hosts = netloc.rpartition("@")
            name, has_password, _ = user.partition(":")
            if has_password:
                netloc = f"{name}:***@{hosts}"
        location = f"{scheme}:{rest[:slashes]}{netloc}{slash}{path}"
    return _SECRET_PARAMETER.sub(r"\1***", location)


def masked_text(text: str) -> str:
    """``text`` with the password of each URL in it masked (see :func:`masked`)."""
    if "@" not in text and "password" not in text.lower():
        return text
    words = [masked(w) if _URL_IN_TEXT.search(w) else w for w in text.split(" ")]
    return _SECRET_PARAMETER.sub(r"\1***", " ".join(words))


def check_location(location: str) -> None:
    """Refuse a ``location`` no store takes (see :func:`open_store`), before anything
    is opened or created."""
    _scheme(location)


def _scheme(location: str) -> str:
    """The URL scheme of ``location`` (``""`` for a path); one no store knows is refused
    (a SQLite ``file:`` URI aside), rather than taken for a relative path, and so is a
    store's URL mistyped (``postgresql:/x@h/db``, one slash)."""
    near = _NEAR_URL.match(location)
    if near and any(near[1].lower() in schemes for schemes, _, _ in STORES):
        raise ConfigurationError(
            f"location: {masked(location)!r} looks like a mistyped URL (no '//' after"
            f" '{near[1]}:'): write {near[1]}://user@host/dbname, or ./{masked(location)}"
            " for a file of that name"
        )
    scheme, found, _ = location.partition("://")
    if not found or scheme.lower() == "file" or "/" in scheme or "\\" in scheme:
        return ""
    scheme = scheme.lower()
    if not any(scheme in schemes for schemes, _, _ in STORES):
        known = ", ".join(f"{s}://" for schemes, _, _ in STORES for s in schemes)
        raise ConfigurationError(
            f"location: {scheme}:// names no store Anchorline has: use a SQLite file path"
            f" (or a file: URI) or a {known} URL"
        )
    return scheme


def _import(target: str, scheme: str, extra: str) -> Any:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        # The store itself, or a driver it needs; a module of ours it misses is a bug.
        missing = e.name or ""
        ours = missing.split(".")[0] == "anchorline" and not module.startswith(missing)
        if ours:
            raise
        raise ConfigurationError(
            f"a {scheme}:// database needs the {extra} store, which is not installed"
            f" (no module {missing!r}): pip install 'anchorline[{extra}]'"
        ) from None


def missing(location: str) -> str | None:
    """Why no store is at ``location`` yet (one line naming where it was looked for), or
    ``None`` if one is; creates nothing. ``":memory:"`` and ``file:`` URIs are never
    missing."""
    scheme = _scheme(location)
    for schemes, target, extra in STORES:
        if scheme in schemes:
            check: Callable[[str], str | None] = _import(
                f"{target.partition(':')[0]}:missing", scheme, extra
            )
            return check(location)
    if location == ":memory:" or location.startswith("file:") or os.path.exists(location):
        return None
    return f"no database at {os.path.abspath(location)}"


def open_store(
    location: str,
    *,
    retry: RetryPolicy | None = None,
    durability: str | None = None,
    vfs: str | None = None,
) -> Store:
    """The store ``location`` names, opened.

    ``durability`` is checked here (:func:`resolve_durability`) and means what
    the store makes of it. ``vfs`` names an apsw VFS, so it is for a SQLite
    file only.
    """
    durability = resolve_durability(durability)
    scheme = _scheme(location)
    for schemes, target, extra in STORES:
        if scheme in schemes:
            if vfs is not None:
                raise ConfigurationError(
                    f"vfs: {vfs!r} names a SQLite VFS, but the database is a {scheme}:// URL;"
                    " leave vfs out"
                )
            store: Store = _import(target, scheme, extra)(
                location, retry=retry, durability=durability
            )
            return store
    from .sqlite.store import SQLiteStore

    return SQLiteStore(location, retry=retry, durability=durability, vfs=vfs)
