"""anchorline: the command line of Anchorline, one write path for an agent loop's messages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import apsw
import attrs
from rich.console import Console
from rich.table import Table

from .errors import AnchorlineError, InvalidOp
from .ids import new_message_id
from .ops import Add, PersistOp, Reserve, UpdateContent
from .parsing import parse_op
from .results import Message
from .runner import Pipeline

DB_ENV = "ANCHORLINE_DB"
DEFAULT_DB = "anchorline.db"
INDEX_ENV = "ANCHORLINE_INDEX"
DEFAULT_INDEX = "local"
DEBUG_ENV = "ANCHORLINE_DEBUG"

out = Console(highlight=False)


class CLIError(Exception):
    """A problem to report on one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see anchorline --help)", status=2)


def _text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = [b.get("text", f"[{b.get('type')}]") for b in message.content]
    return "".join(str(p) for p in parts) or "(empty)"


def _print_conversation(messages: Sequence[Message]) -> None:
    table = Table(show_lines=False, expand=False)
    table.add_column("role")
    table.add_column("status")
    table.add_column("id", no_wrap=True)
    table.add_column("content", overflow="fold")
    for m in messages:
        table.add_row(m.role, m.status, m.id, _text(m))
    out.print(table)


# --- commands ---------------------------------------------------------------


def cmd_demo(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Play one agent turn: the user's message, then a streamed assistant answer."""
    conversation_id = f"demo-{new_message_id()}"
    out.print(f"[bold]conversation[/] {conversation_id}")
    question = "What is a good name for a message store that never loses a token?"
    pipeline.persist(Add(conversation_id=conversation_id, role="user", content=question))
    out.print(f"[cyan]user[/]      {question}")
    reserved = pipeline.persist(Reserve(conversation_id=conversation_id, role="assistant"))
    message_id = reserved.message.id
    out.print(f"[magenta]assistant[/] reserved message id {message_id} before the first token")
    answer = ""
    for chunk in ("Anchorline: ", "every streamed token ", "is anchored ", "to a stable id."):
        answer += chunk
        pipeline.persist(
            UpdateContent(
                message_id=message_id, content=[{"type": "text", "text": answer}], final=False
            )
        )
        out.print(f"[magenta]assistant[/] partial flush: {answer!r}")
        time.sleep(0.05)
    pipeline.persist(
        UpdateContent(message_id=message_id, content=[{"type": "text", "text": answer}])
    )
    out.print("[magenta]assistant[/] final content written")
    _print_conversation(pipeline.messages(conversation_id))
    if pipeline.settings.index is not None:
        pipeline.flush_index(timeout=60)
        query = "which token store anchors a stable id"
        hits = pipeline.search(query, conversation_id=conversation_id, limit=1)
        if not hits or hits[0].message.id != message_id:
            raise CLIError("search did not find the turn just written")
        out.print(
            f"[bold]search[/] {query!r} finds {hits[0].message.id} (score {hits[0].score:.2f})"
        )
    return 0


def cmd_show(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Print one conversation's messages."""
    messages = pipeline.messages(args.conversation_id)
    if not messages:
        raise CLIError(f"no messages in conversation {args.conversation_id!r}")
    _print_conversation(messages)
    return 0


def _read_ops(stream: IO[str]) -> tuple[list[tuple[int, PersistOp]], list[tuple[int, str]]]:
    ops: list[tuple[int, PersistOp]] = []
    invalid: list[tuple[int, str]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            invalid.append((number, f"not JSON: {e.msg} at column {e.colno}"))
            continue
        try:
            ops.append((number, parse_op(data)))
        except InvalidOp as e:
            invalid.append((number, str(e)))
    return ops, invalid


def cmd_ingest(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Apply JSON lines of ops; report each bad line as 'line N: reason'."""
    if args.file == "-":
        ops, invalid = _read_ops(sys.stdin)
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                ops, invalid = _read_ops(f)
        except OSError as e:
            raise CLIError(f"cannot read {args.file}: {e.strerror}") from None
    applied = 0
    if args.atomic:
        if not invalid:
            try:
                pipeline.persist_many([op for _, op in ops])
                applied = len(ops)
            except AnchorlineError as e:
                line = ops[e.op_index or 0][0]
                invalid.append((line, str(e)))
    else:
        for number, op in ops:
            try:
                pipeline.persist(op)
                applied += 1
            except AnchorlineError as e:
                invalid.append((number, str(e)))
    for number, reason in sorted(invalid):
        print(f"line {number}: {reason}", file=sys.stderr)
    note = " (--atomic: nothing applied)" if args.atomic and invalid else ""
    out.print(f"applied {applied}, invalid {len(invalid)}{note}")
    return 1 if invalid else 0


def _indexed(pipeline: Pipeline) -> None:
    if pipeline.settings.index is None:
        raise CLIError("no index: drop --index none (or unset ANCHORLINE_INDEX=none)")


def cmd_search(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Find the messages nearest to QUERY."""
    _indexed(pipeline)
    pipeline.flush_index(timeout=args.wait)
    hits = pipeline.search(args.query, conversation_id=args.conversation, limit=args.limit)
    if not hits:
        out.print("no matches")
        return 0
    for hit in hits:
        m = hit.message
        out.print(f"[bold]{hit.score:.3f}[/] {m.conversation_id} {m.role} {m.id}")
        out.print(f"      {_text(m)}", overflow="fold")
    return 0


def cmd_reindex(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Rebuild the index from SQLite (resumes if interrupted)."""
    from rich.progress import Progress

    _indexed(pipeline)
    indexer = pipeline.indexer()
    with Progress(console=out, transient=False) as progress:
        task = progress.add_task("reindexing", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        total = indexer.reindex(report)
    out.print(f"reindexed {total} message(s) into {indexer.index!r}")
    return 0


def cmd_doctor(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Check the index against the messages; exit 1 if they disagree."""
    _indexed(pipeline)
    report = pipeline.indexer().doctor()
    table = Table(title="index consistency", show_header=False)
    table.add_row("indexable messages", str(report.indexable))
    table.add_row("points in the index", str(report.points))
    table.add_row("pending items", str(report.pending))
    table.add_row("failing items", str(report.failing))
    table.add_row("missing points", str(len(report.missing)))
    table.add_row("orphan points", str(len(report.orphans)))
    table.add_row("last error", report.last_error or "-")
    out.print(table)
    if report.clean:
        out.print("[green]clean[/]")
        return 0
    out.print("[yellow]not clean[/]: run anchorline reindex, or let pending items drain")
    return 1


def cmd_sweep(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Recover placeholders left by dead writers: delete empty ones, finalise partial ones."""
    report = pipeline.sweep(older_than=args.older_than)
    for message_id in report.deleted:
        out.print(f"deleted   {message_id} (empty placeholder)")
    for message_id in report.finalized:
        out.print(f"finalised {message_id} (partial content, marked interrupted)")
    for message_id in report.skipped:
        out.print(f"skipped   {message_id} (written while sweeping)")
    out.print(
        f"swept {report.total}: {len(report.deleted)} deleted,"
        f" {len(report.finalized)} finalised, {len(report.skipped)} skipped"
    )
    return 0


def cmd_plugins(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """List the registered plugins and, per hook, the order its implementations run in."""
    pm = pipeline.plugin_manager
    table = Table(title="plugins")
    table.add_column("name")
    table.add_column("plugin", overflow="fold")
    for name, plugin in pm.list_name_plugin():
        table.add_row(name, repr(plugin))
    out.print(table)
    hooks = Table(title="hooks (implementations in call order)")
    hooks.add_column("hook")
    hooks.add_column("implementations", overflow="fold")
    for hook_name in sorted(pm.hook.__dict__):
        caller = getattr(pm.hook, hook_name)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            flags = [f for f in _IMPL_FLAGS if getattr(impl, f)]
            impls.append(impl.plugin_name + (f" ({', '.join(flags)})" if flags else ""))
        hooks.add_row(hook_name, " → ".join(impls) or "-")
    out.print(hooks)
    return 0


_IMPL_FLAGS = ("wrapper", "hookwrapper", "tryfirst", "trylast")


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the pipeline against raw apsw (and the peers, if installed) in one run."""
    from .bench import QUICK, Config, run_bench
    from .bench.report import print_report, write_json

    config = QUICK if args.quick else Config()
    if args.rounds is not None:
        if args.rounds < 1:
            raise CLIError(f"--rounds: must be at least 1, got {args.rounds}", status=2)
        config = attrs.evolve(config, rounds=args.rounds)
    if args.no_peers:
        config = attrs.evolve(config, peers=False)
    if args.json is not None and not args.json.parent.is_dir():
        raise CLIError(f"--json: folder {str(args.json.parent)!r} does not exist", status=2)
    if args.dir is not None and not args.dir.is_dir():
        raise CLIError(f"--dir: folder {str(args.dir)!r} does not exist", status=2)
    with (
        tempfile.TemporaryDirectory(prefix="anchorline-bench-", dir=args.dir) as workdir,
        out.status("starting") as status,
    ):
        try:
            report = run_bench(
                config, workdir=Path(workdir), progress=lambda text: status.update(text)
            )
        except apsw.FullError:
            raise CLIError(
                f"the disk is full under {tempfile.gettempdir() if args.dir is None else args.dir}:"
                " a full bench needs about 1 GB of scratch space; choose a folder with --dir"
            ) from None
    print_report(report, out)
    if args.json is not None:
        write_json(report, args.json)
        out.print(f"wrote {args.json}")
    return 0


Command = Callable[[Pipeline, argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anchorline", description=__doc__)
    parser.add_argument(
        "--db",
        default=os.environ.get(DB_ENV, DEFAULT_DB),
        help=f"database file (default: ${DB_ENV} or ./{DEFAULT_DB})",
    )
    parser.add_argument(
        "--index",
        default=os.environ.get(INDEX_ENV, DEFAULT_INDEX),
        help="vector index: local (a folder next to the database), :memory:, a Qdrant URL,"
        f" or none (default: ${INDEX_ENV} or {DEFAULT_INDEX})",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, fn: Command, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=fn.__doc__, description=fn.__doc__, **kwargs)
        p.set_defaults(func=fn)
        return p

    add("demo", cmd_demo)
    add("show", cmd_show).add_argument("conversation_id")
    ingest = add("ingest", cmd_ingest)
    ingest.add_argument("file", help="a file of JSON lines, or - for standard input")
    ingest.add_argument("--atomic", action="store_true", help="apply all lines or none")
    add("plugins", cmd_plugins)
    search = add("search", cmd_search)
    search.add_argument("query")
    search.add_argument("--conversation", help="only this conversation")
    search.add_argument("--limit", type=int, default=5, help="how many hits (default 5)")
    search.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for pending indexing"
    )
    add("reindex", cmd_reindex)
    sweep = add("sweep", cmd_sweep)
    sweep.add_argument(
        "--older-than",
        type=float,
        default=60.0,
        metavar="S",
        help="only placeholders not written for S seconds (default 60)",
    )
    add("doctor", cmd_doctor)
    bench = sub.add_parser("bench", help=cmd_bench.__doc__, description=cmd_bench.__doc__)
    bench.set_defaults(standalone=cmd_bench)
    bench.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    bench.add_argument("--rounds", type=int, help="rounds to alternate (default 11; quick 2)")
    bench.add_argument("--no-peers", action="store_true", help="leave out the peer libraries")
    bench.add_argument(
        "--dir", type=Path, metavar="PATH", help="scratch folder (default: the system's temp)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if standalone := getattr(args, "standalone", None):
            status: int = standalone(args)
            return status
        index = None if args.index == "none" else args.index
        with Pipeline.open(args.db, index=index) as pipeline:
            status = args.func(pipeline, args)
        return status
    except CLIError as e:
        print(f"anchorline: error: {e}", file=sys.stderr)
        return e.status
    except (AnchorlineError, OSError) as e:
        print(f"anchorline: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anchorline: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"anchorline: error: unexpected {type(e).__name__}: {e}"
            f" (a bug: set {DEBUG_ENV}=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
