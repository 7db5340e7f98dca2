"""How much a commit survives: the ``durability`` setting, checked once for every store."""

from __future__ import annotations

import os

from anchorline.errors import ConfigurationError

#: The environment variable that sets the durability when ``Pipeline.open`` does not.
DURABILITY_ENV = "ANCHORLINE_DURABILITY"
#: What each store makes of a durability is its own (SQLite: ``PRAGMA synchronous``).
DURABILITIES = ("normal", "full")


def resolve_durability(durability: str | None) -> str:
    """``durability``, else ``$ANCHORLINE_DURABILITY``, else ``"normal"``; checked."""
    source = "durability"
    if durability is None:
        durability = os.environ.get(DURABILITY_ENV) or "normal"
        source = DURABILITY_ENV
    if durability not in DURABILITIES:
        raise ConfigurationError(
            f"{source}: must be 'normal' or 'full', got {durability!r}"
            " ('full' also survives a power loss, at the cost of a sync per commit)"
        )
    return durability
