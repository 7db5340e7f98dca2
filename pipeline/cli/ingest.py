"""``anchorline ingest``: JSON lines of ops; a bad line is reported and the rest go on.

A file and standard input are read the same way: as bytes, split on ``\\n``,
each line decoded strictly as UTF-8 on its own. A line is refused with its
number and the reason, whether it fails to parse or the store refuses its op.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from anchorline.memory.stores import masked_text, storage_failures

from ..errors import AnchorlineError
from ..ids import new_message_id
from ..ops import PersistOp, UpdateContent
from ..parsing import parse_op
from ..runner import Pipeline
from .common import CLIError, Needs, add_command
from .output import one_line, out

if TYPE_CHECKING:
    from .common import Subcommands

Refuse = Callable[[int, str], None]

# A \uD800-\uDFFF escape: the only way a line of valid UTF-8 can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def add(sub: Subcommands) -> None:
    ingest = add_command(sub, "ingest", run, Needs(creates=True), before=open_input)
    ingest.add_argument("file", help="a file of JSON lines, or - for standard input")
    ingest.add_argument("--atomic", action="store_true", help="apply all lines or none")


@contextlib.contextmanager
def open_input(args: argparse.Namespace) -> Iterator[None]:
    """Open ``FILE`` into ``args.input``, before the database: an input that cannot be
    read fails the command without creating one."""
    if args.file == "-":
        if sys.stdin is None:
            raise CLIError("ingest -: standard input is closed; give a FILE instead")
        args.input = sys.stdin.buffer
        yield
        return
    try:
        args.input = open(args.file, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise CLIError(f"cannot read {args.file}: {e.strerror}") from None
    with args.input:
        yield


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Apply JSON lines of ops; report each bad line as 'line N: reason' and go on.

    Exits 1 if any line was refused. With --atomic, every line is checked
    (the store's checks included) and nothing is applied if one is refused.
    """
    refused = 0

    def refuse(number: int, reason: str) -> None:
        nonlocal refused
        refused += 1
        print(f"line {number}: {masked_text(one_line(reason))}", file=sys.stderr, flush=True)

    ingest = ingest_atomic if args.atomic else ingest_each
    source: IO[bytes] = args.input
    try:
        try:
            applied = ingest(pipeline, source, refuse)
        except OSError as e:
            if args.file == "-":
                raise
            raise CLIError(f"cannot read {args.file}: {e.strerror}") from None
    except Stopped as e:
        kept = "nothing applied" if args.atomic else f"the {e.applied} applied before it stay"
        at = "" if e.number is None else f" at line {e.number}"
        raise CLIError(f"stopped{at}: {e.cause} ({kept})") from None
    note = " (--atomic: nothing applied)" if args.atomic and refused else ""
    out.print(f"applied {applied}, invalid {refused}{note}")
    return 1 if refused else 0


class Stopped(Exception):
    """The store failed at line ``number`` (``None``: a line of an atomic run's one
    transaction); ``applied`` lines had been applied before it."""

    def __init__(self, number: int | None, applied: int, cause: BaseException) -> None:
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
    """Apply every line's op in one transaction (:meth:`Pipeline.persist_many`), or none
    if any line is refused.

    The store's own checks (an unknown message id, a conflict) are made for every
    line, and the lines refused are the ones a plain run refuses: a refused op is
    left out and the rest sent again, until the store takes them all. Refused lines
    go to ``refuse`` in line order once all have been tried. Returns how many ops
    were applied: all of them, or 0.
    """
    refused: list[tuple[int, str]] = []
    ops: list[tuple[int, PersistOp]] = []
    for number, parsed in parse_lines(lines):
        if isinstance(parsed, str):
            refused.append((number, parsed))
        else:
            ops.append((number, parsed))
    # Once a line is refused nothing may commit: a last op that the store refuses
    # rolls back the ones that passed.
    never = UpdateContent(message_id=f"ingest-refused-{new_message_id()}", content="")
    failures = storage_failures()
    while True:
        batch = [op for _, op in ops]
        try:
            applied = len(pipeline.persist_many([*batch, never] if refused else batch))
        except failures as e:
            raise Stopped(None, 0, e) from e
        except AnchorlineError as e:
            if e.op_index is None or e.op_index > len(ops):
                raise
            if e.op_index == len(ops):  # the last op: every line was tried
                break
            number, _ = ops.pop(e.op_index)
            refused.append((number, str(e)))
            continue
        return applied
    for number, reason in sorted(refused):
        refuse(number, reason)
    return 0
