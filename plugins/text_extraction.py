"""The default ``index_text``: string content, and the text of ``text`` blocks."""

from __future__ import annotations

from anchorline.context import Context
from anchorline.hookspecs import hookimpl
from anchorline.results import Message
from anchorline.settings import Settings


def message_text(message: Message) -> str:
    """The text to embed: :attr:`Message.text <anchorline.Message.text>`, stripped."""
    return message.text.strip()


class TextExtraction:
    """The default ``index_text``: string content and ``text`` blocks."""

    def __repr__(self) -> str:
        return "TextExtraction()"

    @hookimpl(trylast=True)
    def index_text(self, message: Message, context: Context) -> str:
        return message_text(message)


def create(settings: Settings) -> TextExtraction | None:
    return TextExtraction() if settings.index is not None else None
