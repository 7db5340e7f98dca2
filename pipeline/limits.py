"""Size limits on what one op may write."""

from __future__ import annotations

from typing import Any

import attrs

from .errors import ConfigurationError, InvalidOp
from .ops import PersistOp


def _positive(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value <= 0:
        raise ConfigurationError(f"{attribute.name}: must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """The largest content and metadata one op may carry, in bytes of compact JSON.

    The defaults are generous (a long answer with inline data, and a rich
    metadata dict); lower them to protect a shared database. An op over a
    limit raises :class:`InvalidOp` and nothing is written.
    """

    max_content_bytes: int = attrs.field(default=4_000_000, validator=_positive)
    max_metadata_bytes: int = attrs.field(default=256_000, validator=_positive)

    def check(self, op: PersistOp) -> None:
        # The JSON is ASCII (non-ASCII is escaped), so its length is its size in bytes.
        content = getattr(op, "content_json", None)
        if content is not None and len(content) > self.max_content_bytes:
            raise InvalidOp(
                f"content: {len(content):,} bytes as JSON, over the limit of"
                f" {self.max_content_bytes:,} (Limits.max_content_bytes)"
            )
        metadata = getattr(op, "metadata_json", None)
        if metadata is not None and len(metadata) > self.max_metadata_bytes:
            raise InvalidOp(
                f"metadata: {len(metadata):,} bytes as JSON, over the limit of"
                f" {self.max_metadata_bytes:,} (Limits.max_metadata_bytes)"
            )


DEFAULT_LIMITS = Limits()
