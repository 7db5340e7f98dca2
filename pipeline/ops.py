"""The write ops: frozen, keyword-only attrs classes tagged by ``kind``.

An op is validated when it is built, so an op that exists is well formed:
ids are non-empty strings, ``role`` is known, and ``content`` and ``metadata``
are plain JSON that will read back equal to what was written.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Final, Literal, TypeAlias

import attrs
import orjson

from .errors import InvalidOp

ROLES: Final = frozenset({"user", "assistant", "system", "tool"})
#: The role of the rows that record a compaction (written by ``Compact`` only).
COMPACTION_ROLE: Final = "compaction"
MAX_ID_LENGTH: Final = 256
MAX_JSON_DEPTH: Final = 64

Content: TypeAlias = str | list[dict[str, Any]]
Metadata: TypeAlias = dict[str, Any]

# One encoder, built once: json.dumps with non-default arguments builds a new
# encoder on every call, which shows on the write path.
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _encode_checked(value: object, floats: bool) -> str:
    """:func:`encode_json` of a value already checked to be plain JSON, faster: orjson
    encodes 500 characters about 20 times as fast, and its text is the same when it
    is ASCII but DEL and holds no float (orjson writes exponents as ``1e16``, json as
    ``1e+16``); json writes the rest (other characters escaped, as always, and the
    integers beyond 64 bits orjson refuses)."""
    if not floats:
        try:
            encoded = orjson.dumps(value)
        except orjson.JSONEncodeError:
            return encode_json(value)
        if encoded.isascii() and b"\x7f" not in encoded:  # json escapes DEL too
            return encoded.decode()
    return encode_json(value)


class _NotJSON(Exception):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.path: list[str] = []


def _walk_json(value: object, depth: int) -> bool:
    """Check that ``value`` is plain JSON; whether it holds a float."""
    if isinstance(value, str | bool | int) or value is None:
        return False
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSON(f"{value!r} is not allowed in JSON")
        return True
    if depth >= MAX_JSON_DEPTH:
        raise _NotJSON(f"nested deeper than {MAX_JSON_DEPTH} levels")
    floats = False
    if type(value) is list:
        for i, item in enumerate(value):
            try:
                floats = _walk_json(item, depth + 1) or floats
            except _NotJSON as e:
                e.path.append(f"[{i}]")
                raise
        return floats
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSON(f"key {key!r} is not a string")
            try:
                floats = _walk_json(item, depth + 1) or floats
            except _NotJSON as e:
                e.path.append(f"[{key!r}]")
                raise
        return floats
    raise _NotJSON(
        f"a {type(value).__name__} is not JSON (use str, int, float, bool, None, list, dict)"
    )


def check_json(field: str, value: object) -> str:
    """Check that ``value`` is plain JSON and return its compact encoding."""
    try:
        floats = _walk_json(value, 0)
    except _NotJSON as e:
        where = field + "".join(reversed(e.path))
        raise InvalidOp(f"{where}: {e.problem}") from None
    return _encode_checked(value, floats)


def check_id(field: str, value: object) -> str:
    """``value`` if it is an id an op may carry (a non-empty string of at most
    :data:`MAX_ID_LENGTH` characters, valid text, no NUL), else :class:`InvalidOp`
    naming ``field``."""
    if type(value) is not str:
        raise InvalidOp(f"{field}: must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidOp(f"{field}: must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidOp(f"{field}: longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value:  # no store holds one the same way (PostgreSQL text cannot)
        raise InvalidOp(f"{field}: contains a NUL character (\\x00)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidOp(f"{field}: contains a lone surrogate, not valid text") from None
    return value


def _valid_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_id(attribute.name, value)


def _valid_optional_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_id(attribute.name, value)


def _valid_role(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or value not in ROLES:
        raise InvalidOp(f"role: must be one of {', '.join(sorted(ROLES))}; got {value!r}")


def _valid_final(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise InvalidOp(f"final: must be true or false, got {type(value).__name__}")


def _content_json(value: object) -> str:
    if isinstance(value, str):
        return _encode_checked(value, False)
    if type(value) is not list:
        raise InvalidOp(
            f"content: must be a string or a list of content blocks, got {type(value).__name__}"
        )
    for i, block in enumerate(value):
        if type(block) is not dict or not isinstance(block.get("type"), str):
            raise InvalidOp(f"content[{i}]: a content block is a dict with a string 'type'")
    return check_json("content", value)


def _metadata_json(value: object) -> str:
    if type(value) is not dict:
        raise InvalidOp(f"metadata: must be a dict, got {type(value).__name__}")
    if not value:
        return "{}"
    return check_json("metadata", value)


# The encoded JSON is kept on the op (excluded from init, eq, repr and dumps):
# validating needs the encoding anyway, and the store writes it as is.
def _cache(op: object, name: str, text: str) -> None:
    object.__setattr__(op, name, text)


@attrs.frozen(kw_only=True)
class Add:
    """Write a complete message.

    :param conversation_id: the conversation the message belongs to.
    :param role: who wrote it: ``user``, ``assistant``, ``system`` or ``tool``.
    :param content: the text, or a list of content blocks (dicts with a string ``type``).
    :param metadata: any JSON object, stored with the message and returned as written.
    :param message_id: the id to store the message under; ``None`` lets the store mint
        a UUIDv7. Reusing the id of a stored message is a ``Conflict``.
    :param client_message_id: the caller's own key for the message, unique within
        the conversation: an op repeated with it returns the stored message
        (``deduplicated``) instead of writing a second one.
    :param parent_id: the conversation this one was started from (a sub-agent's
        thread); recorded when the conversation is created, ignored after.
    """

    kind: ClassVar[Literal["add"]] = "add"
    conversation_id: str = attrs.field(validator=_valid_id)
    role: str = attrs.field(validator=_valid_role)
    content: Content
    metadata: Metadata = attrs.field(factory=dict)
    message_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    client_message_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    parent_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    content_json: str = attrs.field(init=False, eq=False, repr=False)
    metadata_json: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _cache(self, "content_json", _content_json(self.content))
        _cache(self, "metadata_json", _metadata_json(self.metadata))


@attrs.frozen(kw_only=True)
class Reserve:
    """Write an empty placeholder (content ``[]``, status ``reserved``) to get an id early.

    :param conversation_id: the conversation the message belongs to.
    :param role: who will write it: ``user``, ``assistant``, ``system`` or ``tool``.
    :param metadata: any JSON object, stored with the message and returned as written.
    :param message_id: the id to store the message under; ``None`` lets the store mint
        a UUIDv7. Reusing the id of a stored message is a ``Conflict``.
    :param client_message_id: the caller's own key for the message, unique within
        the conversation: an op repeated with it returns the stored message
        (``deduplicated``) instead of writing a second one.
    :param parent_id: the conversation this one was started from (a sub-agent's
        thread); recorded when the conversation is created, ignored after.
    """

    kind: ClassVar[Literal["reserve"]] = "reserve"
    conversation_id: str = attrs.field(validator=_valid_id)
    role: str = attrs.field(validator=_valid_role)
    metadata: Metadata = attrs.field(factory=dict)
    message_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    client_message_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    parent_id: str | None = attrs.field(default=None, validator=_valid_optional_id)
    metadata_json: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _cache(self, "metadata_json", _metadata_json(self.metadata))


@attrs.frozen(kw_only=True)
class UpdateContent:
    """Replace a message's content; ``final=False`` is a partial flush of a stream.

    :param message_id: the stored message to change.
    :param content: the whole new content (not a delta): the text, or a list of
        content blocks (dicts with a string ``type``).
    :param final: ``True`` completes the message (and makes it indexable);
        ``False`` writes a partial flush and keeps it ``reserved``, which is
        refused once the message is complete.
    """

    kind: ClassVar[Literal["update_content"]] = "update_content"
    message_id: str = attrs.field(validator=_valid_id)
    content: Content
    final: bool = attrs.field(default=True, validator=_valid_final)
    content_json: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _cache(self, "content_json", _content_json(self.content))


@attrs.frozen(kw_only=True)
class Update:
    """Shallow-merge ``metadata`` into the stored metadata.

    :param message_id: the stored message to change.
    :param metadata: the keys to set; each replaces the stored value of that key
        whole, and keys not given are kept. Nothing is ever removed.
    """

    kind: ClassVar[Literal["update"]] = "update"
    message_id: str = attrs.field(validator=_valid_id)
    metadata: Metadata
    metadata_json: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _cache(self, "metadata_json", _metadata_json(self.metadata))


@attrs.frozen(kw_only=True)
class Delete:
    """Delete a message. Deleting an unknown id is not an error.

    :param message_id: the message to delete.
    """

    kind: ClassVar[Literal["delete"]] = "delete"
    message_id: str = attrs.field(validator=_valid_id)


@attrs.frozen(kw_only=True)
class Forget:
    """Delete every message of a conversation, and its points in the index.

    Forgetting an unknown conversation is not an error. See
    ``docs/ops-format.md`` for what each store does to erase the text.

    :param conversation_id: the conversation to forget.
    """

    kind: ClassVar[Literal["forget"]] = "forget"
    conversation_id: str = attrs.field(validator=_valid_id)


def _valid_seq(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise InvalidOp(
            f"{attribute.name}: must be an integer >= 1 (seqs start at 1), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Compact:
    """Record a summary that stands in for every message of a conversation before a seq.

    The compaction is itself a row of the conversation's log (role
    ``compaction``, with its own seq, never indexed): ``Pipeline.context``
    returns the latest one and the messages from ``first_kept_seq`` on, and
    ``Pipeline.messages`` still returns the whole history.

    :param conversation_id: the conversation to compact.
    :param summary: what a model should see instead of the earlier messages: the
        text, or a list of content blocks (dicts with a string ``type``).
    :param first_kept_seq: the seq of the first message kept as it is; every
        message before it is stood in for by the summary. At least 1 (``1`` keeps
        everything); ``Pipeline.compact`` also refuses a seq past the
        conversation's last seq + 1.
    :param metadata: any JSON object, stored with the compaction (its key
        ``first_kept_seq`` is set from the field above).
    """

    kind: ClassVar[Literal["compact"]] = "compact"
    conversation_id: str = attrs.field(validator=_valid_id)
    summary: Content
    first_kept_seq: int = attrs.field(validator=_valid_seq)
    metadata: Metadata = attrs.field(factory=dict)
    content_json: str = attrs.field(init=False, eq=False, repr=False)
    metadata_json: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            content_json = _content_json(self.summary)
        except InvalidOp as e:
            raise InvalidOp(str(e).replace("content", "summary", 1)) from None
        _cache(self, "content_json", content_json)
        metadata = self.stored_metadata()
        _cache(self, "metadata_json", _metadata_json(metadata))

    def stored_metadata(self) -> Metadata:
        """The metadata the compaction row holds: the op's, and ``first_kept_seq``."""
        if type(self.metadata) is not dict:
            raise InvalidOp(f"metadata: must be a dict, got {type(self.metadata).__name__}")
        return {**self.metadata, "first_kept_seq": self.first_kept_seq}


PersistOp: TypeAlias = Add | Reserve | UpdateContent | Update | Delete | Forget | Compact
OP_TYPES: Final[tuple[type[PersistOp], ...]] = (
    Add,
    Reserve,
    UpdateContent,
    Update,
    Delete,
    Forget,
    Compact,
)
