"""The context every hook receives, the unit of work a write commits in, and what code
beside the runner may use of a running pipeline (:class:`PipelineView`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

if TYPE_CHECKING:
    import pluggy

    from .ops import PersistOp
    from .results import Hit, Message, PersistResult
    from .settings import Settings

log = logging.getLogger("anchorline")


class PipelineView(Protocol):
    """What a hook implementation (``context.pipeline``) and the runner's helpers
    (streaming, sweeping, compaction) use of a running pipeline.
    :class:`anchorline.Pipeline` is one; see it for what each method does."""

    settings: Settings
    plugin_manager: pluggy.PluginManager

    def persist(
        self,
        op: PersistOp | Mapping[str, Any],
        *,
        expect_updated_at: Mapping[str, int] | None = ...,
    ) -> PersistResult: ...

    def persist_many(
        self,
        ops: Iterable[PersistOp | Mapping[str, Any]],
        *,
        expect_updated_at: Mapping[str, int] | None = ...,
    ) -> list[PersistResult]: ...

    def get(self, message_id: str) -> Message | None: ...

    def messages(
        self,
        conversation_id: str,
        *,
        limit: int | None = ...,
        after_seq: int | None = ...,
        roles: Iterable[str] | None = ...,
    ) -> list[Message]: ...

    def context(self, conversation_id: str, *, as_of_seq: int | None = ...) -> list[Message]: ...

    def search(
        self, query: str, *, conversation_id: str | None = ..., limit: int = ...
    ) -> list[Hit]: ...


class Participant(Protocol):
    """A store's share of a unit of work: whatever it wrote, it commits or rolls back.

    ``commit`` may return ``(handed out, committed)`` pairs of the results a
    retried attempt stored differently (``anchorline.memory.journal``); ``None``
    when every result it handed out stands.
    """

    def commit(self) -> Sequence[tuple[Any, Any]] | None: ...

    def rollback(self) -> None: ...


P = TypeVar("P", bound=Participant)
R = TypeVar("R")


class UnitOfWork:
    """The writes of one ``persist`` or ``persist_many`` call.

    A store joins it on its first write and gets the same participant back for
    the rest of the call. The runner commits only after the whole hook chain has
    returned, so a wrapper that raises after the terminal still leaves nothing
    behind.

    ``sole`` is the runner's promise that the call writes one op and that nothing
    can undo it once the chain has it (no wrapper runs after the terminal): the
    first participant may then commit that op's write as it makes it, in one
    round trip to a server. :meth:`sole_now` says whether a store joining now may.
    """

    __slots__ = ("_by_identity", "_participants", "corrections", "sole")

    def __init__(self, *, sole: bool = False) -> None:
        self._participants: dict[Hashable, Participant] = {}
        self.sole = sole
        #: After :meth:`commit`: the results a retried attempt stored differently,
        #: as ``(handed out, committed)`` pairs (see :meth:`corrected`).
        self.corrections: Sequence[tuple[Any, Any]] = ()
        self._by_identity: dict[int, Any] | None = None

    def sole_now(self) -> bool:
        """Whether a participant joining now is the call's only one and may commit its
        one write at once (see ``sole``)."""
        return self.sole and not self._participants

    def join(self, key: Hashable, begin: Callable[[], P]) -> P:
        """The participant registered under ``key``, calling ``begin()`` to make it if new."""
        participant = self._participants.get(key)
        if participant is None:
            participant = self._participants[key] = begin()
        return participant  # type: ignore[return-value]

    def commit(self) -> None:
        if len(self._participants) == 1:  # the usual case: one store
            changed = self._participants.popitem()[1].commit()
            if changed:
                self.corrections = changed
            return
        participants = list(self._participants.values())
        self._participants.clear()
        for i, participant in enumerate(participants):
            try:
                changed = participant.commit()
                if changed:
                    self.corrections = [*self.corrections, *changed]
            except BaseException:
                for rest in participants[i + 1 :]:
                    rest.rollback()
                raise

    def corrected(self, result: R) -> R:
        """``result`` as committed: a result (or the message in it) that a retried
        attempt stored differently is replaced by what is stored."""
        found = self._by_identity
        if found is None:
            # By identity (the pairs keep the objects alive), and by the message inside
            # (a wrapper may have returned a result of its own around it).
            found = self._by_identity = {}
            for given, committed in self.corrections:
                found[id(given)] = committed
                message = getattr(given, "message", None)
                if message is not None:
                    found.setdefault(id(message), committed)
        committed = found.get(id(result))
        if committed is not None:
            return committed  # type: ignore[no-any-return]
        message = getattr(result, "message", None)
        committed = None if message is None else found.get(id(message))
        if committed is not None:
            return attrs.evolve(result, message=committed.message)  # type: ignore[misc]
        return result

    def rollback(self) -> None:
        participants = list(self._participants.values())
        self._participants.clear()
        for participant in participants:
            try:
                participant.rollback()
            except Exception:
                log.exception("rollback failed in %r", participant)


@attrs.define(slots=True)
class Context:
    """What a hook implementation gets besides its own arguments.

    ``pipeline`` is the running :class:`~anchorline.Pipeline` (typed as the
    :class:`PipelineView` it offers hooks); ``unit`` is the
    call's :class:`UnitOfWork`, or ``None`` outside a write. ``expected``
    maps message ids to the ``updated_at`` the caller last saw
    (``expect_updated_at``): a terminal pops a message's entry when it first
    writes that message, and raises ``Conflict`` if the stored value differs.
    """

    pipeline: PipelineView
    unit: UnitOfWork | None = None
    expected: dict[str, int] | None = None
