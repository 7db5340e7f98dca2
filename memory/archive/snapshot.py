"""A conversation as one object: its row and every message, compressed, with a checksum.

The bytes are a header of two lines, then the body compressed with gzip::

    ANCHORLINE SNAPSHOT 1
    sha256 <hex digest of the uncompressed body>
    <gzip of the body: compact JSON, ASCII>

gzip comes with Python (zlib) and every tool can open it; it shrinks a
conversation's JSON to about a fifth. The checksum covers the body as written,
so a snapshot that was truncated, altered or swapped for another conversation's
is refused (:class:`~anchorline.errors.SnapshotCorrupt`) before anything is
written from it. Numbers are written and read by ``json``: an integer of any size
reads back exactly.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from typing import Any

import attrs

from anchorline.errors import SnapshotCorrupt
from anchorline.memory.interface import ConversationState
from anchorline.ops import encode_json
from anchorline.results import Message

MAGIC = b"ANCHORLINE SNAPSHOT 1\n"
FORMAT = 1
#: The body a snapshot may expand to; a larger one is refused as corrupt rather than
#: filling the memory.
MAX_BODY = 4 * 1024**3
_STATUSES = ("reserved", "complete")


@attrs.frozen(kw_only=True)
class Snapshot:
    """What archiving a conversation keeps: its row as the store kept it and every
    message (placeholders and compactions included), in seq order."""

    conversation: ConversationState
    messages: tuple[Message, ...]
    #: When the snapshot was taken, epoch milliseconds.
    taken_at: int

    @property
    def conversation_id(self) -> str:
        return self.conversation.id


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot as the bytes stored in the archive."""
    state = snapshot.conversation
    body = encode_json(
        {
            "format": FORMAT,
            "taken_at": snapshot.taken_at,
            "conversation": {
                "id": state.id,
                "parent_id": state.parent_id,
                "next_seq": state.next_seq,
                "first_at": state.first_at,
                "last_at": state.last_at,
            },
            "messages": [_row(m) for m in snapshot.messages],
        }
    ).encode("ascii")
    digest = hashlib.sha256(body).hexdigest().encode("ascii")
    return MAGIC + b"sha256 " + digest + b"\n" + gzip.compress(body, compresslevel=6, mtime=0)


def _row(m: Message) -> list[Any]:
    return [m.id, m.role, m.content, m.metadata, m.status, m.client_message_id,
            m.created_at, m.updated_at, m.seq]  # fmt: skip


def decode(data: bytes, conversation_id: str) -> Snapshot:
    """The snapshot of ``conversation_id`` in ``data``; :class:`SnapshotCorrupt` if the
    bytes are not one, were changed, or hold another conversation."""
    where = f"snapshot of conversation {conversation_id!r}"
    if not data.startswith(MAGIC):
        raise SnapshotCorrupt(f"{where}: not an Anchorline snapshot (its header is wrong)")
    header_end = data.find(b"\n", len(MAGIC))
    header = data[len(MAGIC) : header_end]
    if header_end < 0 or not header.startswith(b"sha256 ") or len(header) != 7 + 64:
        raise SnapshotCorrupt(f"{where}: its checksum line is missing or malformed")
    body = _decompress(data[header_end + 1 :], where)
    if hashlib.sha256(body).hexdigest().encode("ascii") != header[7:]:
        raise SnapshotCorrupt(f"{where}: the checksum does not match its contents")
    try:
        document = json.loads(body)
        return _snapshot(document, conversation_id, where)
    except SnapshotCorrupt:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as e:
        raise SnapshotCorrupt(f"{where}: its contents are malformed ({e})") from None


def _decompress(compressed: bytes, where: str) -> bytes:
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        body = inflate.decompress(compressed, MAX_BODY)
    except zlib.error as e:
        raise SnapshotCorrupt(f"{where}: it does not decompress ({e})") from None
    if inflate.unconsumed_tail:
        raise SnapshotCorrupt(f"{where}: it expands beyond {MAX_BODY} bytes")
    if not inflate.eof:
        raise SnapshotCorrupt(f"{where}: it is cut short or damaged")
    return body


def _snapshot(document: Any, conversation_id: str, where: str) -> Snapshot:
    if document.get("format") != FORMAT:
        raise SnapshotCorrupt(f"{where}: format {document.get('format')!r}, expected {FORMAT}")
    row = document["conversation"]
    if row["id"] != conversation_id:
        raise SnapshotCorrupt(f"{where}: it holds conversation {row['id']!r}")
    state = ConversationState(
        id=_typed(row["id"], str, "conversation.id", where),
        parent_id=_typed(row["parent_id"], str | None, "conversation.parent_id", where),
        next_seq=_typed(row["next_seq"], int, "conversation.next_seq", where),
        first_at=_typed(row["first_at"], int, "conversation.first_at", where),
        last_at=_typed(row["last_at"], int, "conversation.last_at", where),
    )
    messages = []
    last_seq = 0
    for i, item in enumerate(document["messages"]):
        field = f"messages[{i}]"
        mid, role, content, metadata, status, client_id, created, updated, seq = item
        message = Message(
            id=_typed(mid, str, f"{field}.id", where),
            conversation_id=conversation_id,
            role=_typed(role, str, f"{field}.role", where),
            content=_typed(content, str | list, f"{field}.content", where),
            metadata=_typed(metadata, dict, f"{field}.metadata", where),
            status=status,
            client_message_id=_typed(client_id, str | None, f"{field}.client_message_id", where),
            created_at=_typed(created, int, f"{field}.created_at", where),
            updated_at=_typed(updated, int, f"{field}.updated_at", where),
            seq=_typed(seq, int, f"{field}.seq", where),
        )
        if status not in _STATUSES:
            raise SnapshotCorrupt(f"{where}: {field}.status is {status!r}")
        if not last_seq < message.seq < state.next_seq:
            raise SnapshotCorrupt(f"{where}: {field}.seq {message.seq} is out of order")
        last_seq = message.seq
        messages.append(message)
    taken_at = _typed(document["taken_at"], int, "taken_at", where)
    return Snapshot(conversation=state, messages=tuple(messages), taken_at=taken_at)


def _typed(value: Any, kind: Any, field: str, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SnapshotCorrupt(f"{where}: {field} is a {type(value).__name__}")
    return value
