"""``parse_op`` and ``dump_op``: ops to and from plain dicts, tagged by ``kind``."""

from __future__ import annotations

from typing import Any

import cattrs
from cattrs.strategies import configure_tagged_union

from .errors import InvalidOp
from .ops import OP_TYPES, Content, Metadata, PersistOp

_converter = cattrs.Converter(forbid_extra_keys=True)


def _as_is(value: Any, _: Any) -> Any:
    return value


# Values reach the attrs validators untouched: cattrs would otherwise coerce
# (str(5) == "5"), and the validators give the messages that name the field.
_converter.register_structure_hook(str, _as_is)
_converter.register_structure_hook(bool, _as_is)
_AS_IS = (Content, Metadata, str | None)
_converter.register_structure_hook_func(lambda t: t in _AS_IS, _as_is)
_KIND_OF: dict[type, str] = {t: t.kind for t in OP_TYPES}
configure_tagged_union(PersistOp, _converter, tag_generator=_KIND_OF.__getitem__, tag_name="kind")

_KINDS = ", ".join(t.kind for t in OP_TYPES)
_KIND_SET = frozenset(_KIND_OF.values())


def _first_problem(exc: BaseException, kind: str) -> str:
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, InvalidOp):
            return str(leaf)
    for leaf in leaves:
        if isinstance(leaf, cattrs.ForbiddenExtraKeysError):
            return f"{', '.join(sorted(leaf.extra_fields))}: unknown field for kind {kind!r}"
    if isinstance(exc, cattrs.BaseValidationError):
        problem, _, where = cattrs.transform_error(exc, path=kind)[0].partition(" @ ")
        return f"{where.removeprefix(kind + '.')}: {problem} for kind {kind!r}"
    return f"op: {exc}"


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


def parse_op(data: dict[str, Any]) -> PersistOp:
    """Build an op from a dict whose ``kind`` names it. Any problem raises :class:`InvalidOp`."""
    if not isinstance(data, dict):
        raise InvalidOp(f"op: must be a dict with a 'kind', got {type(data).__name__}")
    kind = data.get("kind")
    if kind is None:
        raise InvalidOp(f"kind: missing; must be one of {_KINDS}")
    if not isinstance(kind, str) or kind not in _KIND_SET:
        raise InvalidOp(f"kind: unknown op kind {kind!r}; must be one of {_KINDS}")
    try:
        op: PersistOp = _converter.structure(data, PersistOp)  # type: ignore[arg-type]
    except InvalidOp:
        raise
    except Exception as e:
        raise InvalidOp(_first_problem(e, kind)) from None
    return op


def dump_op(op: PersistOp) -> dict[str, Any]:
    """The dict form of ``op``, with its ``kind``; ``parse_op`` turns it back into ``op``."""
    if not isinstance(op, OP_TYPES):
        raise InvalidOp(f"op: not an op: {type(op).__name__}")
    data: dict[str, Any] = _converter.unstructure(op, unstructure_as=PersistOp)
    return data
