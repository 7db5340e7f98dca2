"""Everything ``Pipeline.open`` was given, handed to each default plugin's factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from anchorline.memory.retry import RetryPolicy

    from .embedding import Embedder


@attrs.frozen(kw_only=True)
class Settings:
    """The options of one pipeline. ``terminal`` is the caller's replacement, if any."""

    path: str
    terminal: Any = None
    retry: RetryPolicy | None = None
    index: str | None = None
    embedder: Embedder | None = None
    index_api_key: str | None = None
    index_sync: bool = False
    vfs: str | None = None
    limits: Limits = DEFAULT_LIMITS
    durability: str | None = None
