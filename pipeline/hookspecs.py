"""Every hook Anchorline calls, with the markers plugins use.

A plugin is any object or module with functions decorated by :data:`hookimpl`
and named after a hook below. See ``docs/hooks.md`` for an example of each.
``Pipeline.open`` raises ``PluginError`` for an implementation named after no
hook, unless it is marked ``@hookimpl(optionalhook=True)`` (a hook that another
plugin declares); an answer of the wrong type to a ``firstresult`` hook raises
``PluginError`` naming the plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .context import Context
    from .embedding import Embedder
    from .ops import PersistOp
    from .results import Message, PersistResult

PROJECT = "anchorline"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- write path -------------------------------------------------------------


@hookspec(firstresult=True)
def persist(op: PersistOp, context: Context) -> PersistResult | None:
    """Apply one write op.

    :param op: the op to apply (``Add``, ``Reserve``, ``UpdateContent``, ``Update``,
        ``Delete``, ``Forget`` or ``Compact``).
    :param context: the call's :class:`~anchorline.context.Context`; a store that
        wants to commit with the rest of the call joins ``context.unit``.

    Return the result whose ``kind`` matches the op to answer it: the chain
    stops there and the default terminal (registered as ``"terminal"``,
    ``trylast``) never runs. Return ``None`` to pass the op on. A
    ``wrapper=True`` implementation sees the op before and the result, or the
    exception, after its ``yield``; raising from it fails the op and rolls the
    write back. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def persist_batch(ops: list[PersistOp], context: Context) -> list[PersistResult] | None:
    """Apply the ops of one ``Pipeline.persist_many`` call together: the batch form of
    :func:`persist`, which a plugin opts into to write a batch faster than op by op.

    :param ops: the validated ops, in order.
    :param context: the call's context, shared by every op of the batch.

    Return one result per op, in order, to answer the batch; ``None`` passes it
    on. The runner calls this hook only when every plugin that implements
    ``persist`` implements it too; otherwise each op goes through ``persist`` as
    before, so a plugin that only implements ``persist`` still sees every op. An
    error for one op should carry that op's position in ``op_index``.
    Stops at the first non-None result.
    """


@hookspec
def after_persist(op: PersistOp, result: PersistResult, context: Context) -> None:
    """Called once ``op`` is durable, for side effects such as indexing or metrics.

    :param op: the op that was applied.
    :param result: what the ``persist`` chain returned for it.
    :param context: the call's context.

    The return value is ignored. An exception is logged and does not fail the
    op, nor stop the other implementations. Wrappers are not supported here.
    """


# --- reads ------------------------------------------------------------------


@hookspec(firstresult=True)
def get_message(message_id: str, context: Context) -> Message | None:
    """Read one message.

    :param message_id: the id to look up.
    :param context: the call's context.

    Return the :class:`~anchorline.results.Message` to answer the read; ``None``
    passes it on, and ``None`` from every implementation means "not found".
    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def list_messages(
    conversation_id: str,
    limit: int | None,
    after_seq: int | None,
    roles: tuple[str, ...] | None,
    context: Context,
) -> list[Message] | None:
    """Read a conversation's messages in ``seq`` order (oldest first).

    :param conversation_id: the conversation to read.
    :param limit: if not ``None``, at most ``limit`` messages: the most recent ones,
        or with ``after_seq`` the first ones after it.
    :param after_seq: if not ``None``, only messages whose ``seq`` is greater (a page
        forward from the last message seen).
    :param roles: if not ``None``, only messages whose role is among them (sorted).
    :param context: the call's context.

    An implementation may take only some of these arguments (pluggy passes what
    it names); one that answers the read should honour all of them.

    Return the list (possibly empty) to answer the read; ``None`` passes it on.
    Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def list_reserved(updated_before: int, limit: int, context: Context) -> list[Message] | None:
    """Find placeholders left behind: messages still ``reserved`` whose last write is old.

    :param updated_before: a time in epoch milliseconds; only messages whose
        ``updated_at`` is earlier are returned.
    :param limit: the most messages to return, oldest first.
    :param context: the call's context.

    Return the list (possibly empty) to answer; ``None`` passes it on. Used by
    ``Pipeline.sweep``. Stops at the first non-None result.
    """


# --- indexing ---------------------------------------------------------------


@hookspec(firstresult=True)
def index_text(message: Message, context: Context) -> str | None:
    """Extract the text of a complete message to embed.

    :param message: a message whose status is ``complete``.
    :param context: the call's context.

    Return the text; an empty string means "do not index this message". The
    default implementation (``trylast``) joins string content and ``text``
    blocks. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def embedder(context: Context) -> Embedder | None:
    """Provide the embedder that turns texts into vectors for the index.

    :param context: the pipeline's context.

    Return an :class:`~anchorline.embedding.Embedder` (``name``, ``dimension``
    and ``embed(texts)``). The default (``trylast``) is an offline
    feature-hashing embedder. Stops at the first non-None result.
    """


# --- lifecycle --------------------------------------------------------------


@hookspec
def pipeline_opened(context: Context) -> None:
    """Called once the pipeline is built and its plugins are registered.

    :param context: the pipeline's context; ``context.pipeline`` is ready for use.

    The return value is ignored. Raising fails ``Pipeline.open``.
    """


@hookspec
def pipeline_closing(context: Context) -> None:
    """Called by ``Pipeline.close()`` before the stores are closed.

    :param context: the pipeline's context.

    The return value is ignored. Every implementation runs; errors are logged.
    """
