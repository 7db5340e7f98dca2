"""``anchorline ingest``: JSON lines of ops; a bad line is reported and the rest go on.

A file and standard input are read the same way: as bytes, split on ``\\n``,
each line decoded strictly as UTF-8 on its own. A line is refused with its
number and the reason, whether it fails to parse or the store refuses its op.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from anchorline.memory.stores import storage_failures

from .context import Context, UnitOfWork
from .errors import AnchorlineError
from .ops import PersistOp
from .parsing import parse_op
from .results import PersistResult
from .runner import Pipeline, call_each, check_result

Refuse = Callable[[int, str], None]

# A \uD800-\uDFFF escape: the only way a line of valid UTF-8 can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Stopped(Exception):
    """The store failed at line ``number``; ``applied`` lines had been applied before it."""

    def __init__(self, number: int, applied: int, cause: BaseException) -> None:
        super().__init__(f"line {number}: {cause}")
        self.number = number
        self.applied = applied
        self.cause = cause


def _lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def parse_line(raw: bytes, number: int) -> PersistOp | str | None:
    """The op on line ``number``, the reason the line is refused, or ``None`` if it is blank."""
    start = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = start + e.start
        return f"not UTF-8: {e.reason} (byte 0x{raw[at]:02x} at byte {at + 1} of the line)"
    if not text.strip():
        return None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON: {e.msg} at column {e.colno}"
    except RecursionError:
        return "not JSON: nested too deeply"
    except ValueError as e:  # an integer of more digits than Python converts
        problem = str(e).split(";")[0]  # not the advice meant for Python programmers
        return f"not JSON: {problem[:1].lower()}{problem[1:]}"
    try:
        op = parse_op(data)
    except AnchorlineError as e:
        return str(e)
    except RecursionError:
        return "op: nested too deeply"
    if _SURROGATE_ESCAPE.search(text):
        for field in ("content", "metadata"):
            if _lone_surrogate(getattr(op, field, None)):
                return f"{field}: contains a lone surrogate (a \\uD800-\\uDFFF escape), not text"
    return op


def parse_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, PersistOp | str]]:
    """Each non-blank line's number with its op, or the reason it is refused."""
    for number, raw in enumerate(lines, start=1):
        parsed = parse_line(raw, number)
        if parsed is not None:
            yield number, parsed


def ingest_each(pipeline: Pipeline, lines: Iterable[bytes], refuse: Refuse) -> int:
    """Apply each line's op in its own transaction as it is read; returns how many applied.

    Refused lines go to ``refuse`` at once. A store failure raises :class:`Stopped`.
    """
    applied = 0
    failures = storage_failures()
    for number, parsed in parse_lines(lines):
        if isinstance(parsed, str):
            refuse(number, parsed)
            continue
        try:
            pipeline.persist(parsed)
        except failures as e:
            raise Stopped(number, applied, e) from e
        except AnchorlineError as e:
            refuse(number, str(e))
            continue
        applied += 1
    return applied


def ingest_atomic(pipeline: Pipeline, lines: Iterable[bytes], refuse: Refuse) -> int:
    """Apply every line's op in one transaction, or none if any line is refused.

    Each op runs through the chain as in :func:`ingest_each`, so the store's
    own checks (an unknown message id, a conflict) are made for every line
    and the lines refused are the ones a plain run refuses. Refused lines go
    to ``refuse`` in line order once all have been tried. Returns how many
    ops were applied: all of them, or 0.
    """
    refused: list[tuple[int, str]] = []
    ops: list[tuple[int, PersistOp]] = []
    for number, parsed in parse_lines(lines):
        if isinstance(parsed, str):
            refused.append((number, parsed))
        else:
            ops.append((number, parsed))
    limits = pipeline.settings.limits
    hook = pipeline.plugin_manager.hook
    # What Pipeline.persist_many does, except that a refused op does not end the
    # unit: crud checks before it writes, so a refused op leaves nothing in it.
    unit = UnitOfWork()
    context = Context(pipeline, unit)
    done: list[tuple[PersistOp, PersistResult]] = []
    failures = storage_failures()
    try:
        for number, op in ops:
            try:
                limits.check(op)
                done.append(
                    (op, check_result(hook.persist, op, hook.persist(op=op, context=context)))
                )
            except failures as e:
                raise Stopped(number, 0, e) from e
            except AnchorlineError as e:
                refused.append((number, str(e)))
        if refused:
            unit.rollback()
        else:
            unit.commit()
    except BaseException:
        unit.rollback()
        raise
    for number, reason in sorted(refused):
        refuse(number, reason)
    if refused:
        return 0
    for op, result in done:
        call_each(hook.after_persist, op=op, result=result, context=context)
    return len(done)
