"""A framework's own object as the content of one message, and back."""

from __future__ import annotations

from typing import Any

from anchorline.ops import Content
from anchorline.results import Message


def item_content(item: dict[str, Any], block_type: str, text: str) -> Content:
    """The content that stores ``item``: a ``text`` block with ``text`` (what search
    embeds; left out when empty), then a ``block_type`` block holding the item."""
    item_block = {"type": block_type, "item": item}
    return [{"type": "text", "text": text}, item_block] if text else [item_block]


def stored_item(message: Message, block_type: str) -> dict[str, Any] | None:
    """The item ``message`` holds in a ``block_type`` block, or ``None`` if it holds none
    (a message written some other way)."""
    if isinstance(message.content, list):
        for block in message.content:
            if block.get("type") == block_type and isinstance(block.get("item"), dict):
                item: dict[str, Any] = block["item"]
                return item
    return None
