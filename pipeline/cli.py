"""anchorline: the command line of Anchorline, one write path for an agent loop's messages."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anchorline.memory.index.embedders import (
    DEFAULT_EMBEDDER_URL,
    EMBEDDER_ENV,
    EMBEDDER_FORMS,
    EMBEDDER_URL_ENV,
    parse_embedder,
    remembered_embedder,
)
from anchorline.memory.stores import check_location, masked, masked_text, storage_failures

from . import __version__
from .cli_changes import add_arguments as changes_arguments
from .cli_changes import cmd_changes
from .cli_ingest import Stopped, ingest_atomic, ingest_each
from .errors import AnchorlineError, IndexUnavailable
from .ids import new_message_id
from .ops import Add, Reserve, UpdateContent
from .plugin_manager import autoload_enabled, check_entrypoints
from .results import Message
from .runner import Pipeline
from .settings import parse_index

DB_ENV = "ANCHORLINE_DB"
DEFAULT_DB = "anchorline.db"
INDEX_ENV = "ANCHORLINE_INDEX"
DEFAULT_INDEX = "local"
DEBUG_ENV = "ANCHORLINE_DEBUG"


# Text from users, packages and errors goes to rich as Text, never parsed as
# markup (rich.markup.escape would show a trailing backslash twice), ":name:" is
# not turned into an emoji, and a long line is not broken (soft_wrap). Its control
# characters are shown as escapes first (visible()): rich passes them through.
class _Console(Console):
    def on_broken_pipe(self) -> None:
        """stdout's reader left: ended in :func:`main`, as for any other write."""
        self.quiet = True
        raise BrokenPipeError


out = _Console(highlight=False, emoji=False, soft_wrap=True)

# What a terminal would act on rather than show: C0 and C1 controls, DEL, and
# the characters that reorder or break lines (bidi overrides, U+2028/U+2029).
_OTHER_CONTROLS = "\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x0a{_OTHER_CONTROLS}]")
_CONTROL_BUT_LINES = re.compile(f"[\x00-\x08{_OTHER_CONTROLS}]")


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with each control character written as its escape (ESC as ``\\x1b``),
    so that printing it shows it and the terminal does nothing; ``lines`` keeps
    newlines and tabs."""
    pattern = _CONTROL_BUT_LINES if lines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class CLIError(Exception):
    """A problem to report on one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as a :class:`CLIError` that points to its command's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The command's own parser, for what only the top parser finds wrong.
        self.set_defaults(command_parser=self)

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{message} (see {self.prog} --help)", status=2)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a word no command takes is a usage error of that command."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _check_leading_options(parser, argv)
    args, extras = parser.parse_known_args(argv)
    if extras:
        command: argparse.ArgumentParser = args.command_parser
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _check_leading_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse an unknown option before the command's name, by its name (argparse would
    go on and take the option's value for the command)."""
    known = [o for a in parser._actions for o in a.option_strings]
    words = iter(argv)
    for word in words:
        if word == "--" or not word.startswith("-") or word == "-":
            return
        name, given, _ = word.partition("=")
        if name in known:
            if name in _COMMON_OPTIONS and not given:
                next(words, None)
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        parser.error(f"unrecognized option '{name}'{hint}")


def _text(message: Message) -> str:
    """The content as ``show`` prints it: the text, each block on its own line (a block
    without text by its type), its control characters escaped."""
    if isinstance(message.content, str):
        text = message.content or "(empty)"
    else:
        parts = [b.get("text", f"[{b.get('type')}]") for b in message.content]
        text = "\n".join(str(p) for p in parts) or "(empty)"
    return visible(text, lines=True)


def _print_conversation(messages: Sequence[Message], *, table: bool = True) -> None:
    """The messages as a table, or (``table=False``, for a pipe or a file) as plain
    text: a line ``role status id`` and the content below it, indented."""
    if not table:
        for m in messages:
            out.print(Text(f"{visible(m.role)} {visible(m.status)} {visible(m.id)}"))
            out.print(Text("\n".join(f"  {ln}" for ln in _text(m).split("\n"))))
        return
    grid = Table(show_lines=False, expand=False)
    grid.add_column("role")
    grid.add_column("status")
    grid.add_column("id", no_wrap=True)
    grid.add_column("content", overflow="fold")
    for m in messages:
        grid.add_row(Text(visible(m.role)), Text(visible(m.status)), Text(visible(m.id)),
                     Text(_text(m)))  # fmt: skip
    out.print(grid, soft_wrap=False)


# --- commands ---------------------------------------------------------------


def cmd_demo(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Play one agent turn: the user's message, then a streamed assistant answer."""
    conversation_id = f"demo-{new_message_id()}"
    out.print(Text.assemble(("conversation", "bold"), f" {conversation_id}"))
    question = "What is a good name for a message store that never loses a token?"
    pipeline.persist(Add(conversation_id=conversation_id, role="user", content=question))
    out.print(Text.assemble(("user", "cyan"), f"      {question}"))
    reserved = pipeline.persist(Reserve(conversation_id=conversation_id, role="assistant"))
    message_id = reserved.message.id
    assistant = ("assistant", "magenta")
    out.print(Text.assemble(assistant, f" reserved message id {message_id} before the first token"))
    answer = ""
    for chunk in ("Anchorline: ", "every streamed token ", "is anchored ", "to a stable id."):
        answer += chunk
        pipeline.persist(
            UpdateContent(
                message_id=message_id, content=[{"type": "text", "text": answer}], final=False
            )
        )
        out.print(Text.assemble(assistant, f" partial flush: {answer!r}"))
        time.sleep(0.05)
    pipeline.persist(
        UpdateContent(message_id=message_id, content=[{"type": "text", "text": answer}])
    )
    out.print(Text.assemble(assistant, " final content written"))
    _print_conversation(pipeline.messages(conversation_id))
    if pipeline.settings.index is not None:
        pipeline.flush_index(timeout=60)
        query = "which token store anchors a stable id"
        hits = pipeline.search(query, conversation_id=conversation_id, limit=1)
        if not hits or hits[0].message.id != message_id:
            raise CLIError("search did not find the turn just written")
        found = f" {query!r} finds {hits[0].message.id} (score {hits[0].score:.2f})"
        out.print(Text.assemble(("search", "bold"), found))
    return 0


def cmd_show(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Print one conversation's messages: a table on a terminal, else plain text; with
    --json, one JSON object per message and line."""
    import json

    messages = pipeline.messages(args.conversation_id)
    if not messages:
        raise CLIError(f"no messages in conversation {args.conversation_id!r}")
    if args.json:
        for m in messages:  # json.dumps writes every control character as an escape
            sys.stdout.write(json.dumps(attrs.asdict(m), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
    _print_conversation(messages, table=sys.stdout.isatty())
    return 0


def cmd_ingest(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Apply JSON lines of ops; report each bad line as 'line N: reason' and go on.

    Exits 1 if any line was refused. With --atomic, every line is checked
    (the store's checks included) and nothing is applied if one is refused.
    """
    refused = 0

    def refuse(number: int, reason: str) -> None:
        nonlocal refused
        refused += 1
        print(f"line {number}: {masked_text(_one_line(reason))}", file=sys.stderr, flush=True)

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
        raise CLIError(f"stopped at line {e.number}: {e.cause} ({kept})") from None
    note = " (--atomic: nothing applied)" if args.atomic and refused else ""
    out.print(f"applied {applied}, invalid {refused}{note}")
    return 1 if refused else 0


def cmd_search(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Find the messages nearest to QUERY, among those indexed (``--wait`` lets pending
    indexing finish first)."""
    if args.wait > 0:
        pending = pipeline.indexer().settle(args.wait)
        if pending:
            logging.getLogger("anchorline.cli").warning(
                "%d message(s) still waiting to be indexed after %gs: searching what is indexed",
                pending,
                args.wait,
            )
    hits = pipeline.search(args.query, conversation_id=args.conversation, limit=args.limit)
    if not hits:
        out.print("no matches")
        return 0
    for hit in hits:
        m = hit.message
        where = f" {visible(m.conversation_id)} {visible(m.role)} {visible(m.id)}"
        out.print(Text.assemble((f"{hit.score:.3f}", "bold"), where))
        out.print(Text("\n".join(f"      {ln}" for ln in _text(m).split("\n"))))
    return 0


def cmd_reindex(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Rebuild the index from the database (resumes if interrupted)."""
    indexer = pipeline.indexer()
    with _progress(out, transient=False) as progress:
        task = progress.add_task("reindexing", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        total = indexer.reindex(report)
    out.print(Text(masked_text(visible(f"reindexed {total} message(s) into {indexer.index!r}"))))
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    """Copy every conversation from SOURCE to TARGET (SQLite or PostgreSQL, either way).

    Resumable and idempotent: run it again after an interruption to finish.
    """
    from anchorline.memory.copying import copy_store
    from anchorline.memory.stores import open_store

    check_location(args.source)
    check_location(args.target)
    if _is_file(args.source) and not os.path.exists(args.source):
        raise CLIError(f"no database at {os.path.abspath(args.source)}: nothing to copy")
    if _is_file(args.source) and _is_file(args.target) and _same_file(args.source, args.target):
        raise CLIError(f"copy: {args.target} is the source itself; name another target")
    target_index = _index_location_of(args.target) if _is_file(args.target) else None
    source = open_store(args.source)
    try:
        target = open_store(args.target)
        try:
            if "://" in args.source and source.location == target.location:
                raise CLIError(f"copy: {target.location} is the source itself; name another"
                               " target")  # fmt: skip
            with _progress(out) as progress:
                task = progress.add_task("copying", total=None)
                report = copy_store(
                    source, target, progress=lambda done: progress.update(task, completed=done)
                )
        finally:
            target.close()
    finally:
        source.close()
    out.print(
        Text(
            visible(
                f"copied {report.read} message(s) from {source.location} to {target.location}:"
                f" {report.written} written, {report.unchanged} already there;"
                f" {report.conversations} conversation(s) brought up to date"
            )
        )
    )
    if target_index is not None and not os.path.exists(target_index):
        hint = f"build it with 'anchorline --db {args.target} reindex'"
        out.print(Text(visible(f"{args.target} has no index yet, so search does not find these:"
                               f" {hint}")))  # fmt: skip
    return 0


def _same_file(a: str, b: str) -> bool:
    """Whether two database paths name one file (through links, or different spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _index_location_of(db: str) -> str:
    from anchorline.memory.index.vector_index import index_location

    return index_location(DEFAULT_INDEX, db)


class _NoProgress:
    """Progress for a pipe or a file: nothing shown (rich would leave a blank line)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(self, task: int, **fields: Any) -> None:
        pass


def _progress(console: Console, *columns: Any, transient: bool = True) -> Any:
    """A rich ``Progress`` on ``console`` if it is a terminal; else one that shows nothing."""
    from rich.progress import Progress

    if not console.is_terminal:
        return _NoProgress()
    return Progress(*columns, console=console, transient=transient)


def cmd_index_worker(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Drain the index outbox until stopped (SIGTERM or Ctrl-C), for deployments whose
    agent processes open their pipelines with ``index_drain=False``."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    indexer = pipeline.indexer()
    out.print(
        Text(
            visible(
                f"index worker {os.getpid()}: draining {masked(pipeline.settings.path)}"
                f" into {masked(indexer.location)}; stop it with SIGTERM"
            )
        )
    )
    while not stop.wait(0.5):
        pass
    out.print(Text(f"index worker {os.getpid()}: stopped; {pipeline.index_status().pending}"
                   " item(s) left for the next worker"))  # fmt: skip
    return 0


def cmd_index_optimize(args: argparse.Namespace) -> int:
    """Build the HNSW graph of the index folder, for faster approximate search (search is
    exact until then). Other processes find the folder busy while it runs."""
    import multiprocessing

    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from anchorline.errors import IndexBusy, IndexUnavailable
    from anchorline.memory.index.edge_index import optimize_in_child, read_meta
    from anchorline.memory.index.vector_index import index_location

    db = args.database or args.db
    check_location(db)
    if args.index is None and "://" in db:
        raise CLIError("index optimize: a database server has no index folder; a Qdrant server"
                       " optimizes its collections itself")  # fmt: skip
    if args.index == "none":
        raise CLIError("index optimize: --index none: there is no index to optimize")
    location = index_location(args.index or DEFAULT_INDEX, db)
    if not _is_folder(location):
        raise CLIError(f"index optimize: {location} is not an index folder; a Qdrant server"
                       " optimizes its collections itself")  # fmt: skip
    if read_meta(location) is None:
        raise CLIError(f"no index at {os.path.abspath(location)}: build it with"
                       " 'anchorline reindex'")  # fmt: skip
    # In a child process: Qdrant Edge holds the GIL while it optimizes.
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=optimize_in_child, args=(location, send), daemon=True)
    with _progress(
        Console(stderr=True, highlight=False),
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    ) as progress:
        progress.add_task(visible(f"building the HNSW graph of {location}"))
        child.start()
        send.close()
        try:
            answer = receive.recv()
        except EOFError:
            child.join()
            answer = ("IndexUnavailable", f"index optimize: the process optimizing {location}"
                      f" died (exit status {child.exitcode})")  # fmt: skip
        child.join()
    if isinstance(answer, tuple):
        kind, message = answer
        raise (IndexBusy if kind == "IndexBusy" else IndexUnavailable)(message)
    done = f"optimized {location}" if answer else f"{location}: nothing to optimize"
    out.print(Text(visible(done if answer else f"{done} (done already, or too few points to"
                           " need a graph)")))  # fmt: skip
    return 0


def cmd_doctor(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Check the index against the messages; exit 1 if they disagree."""
    report = pipeline.indexer().doctor()
    table = Table(title="index consistency", show_header=False)
    table.add_row("indexable messages", str(report.indexable))
    table.add_row("points in the index", str(report.points))
    table.add_row("pending items", str(report.pending))
    table.add_row("failing items", str(report.failing))
    table.add_row("missing points", str(len(report.missing)))
    table.add_row("orphan points", str(len(report.orphans)))
    table.add_row("last error", Text(masked_text(_one_line(report.last_error or "-"))))
    out.print(table)
    if report.clean:
        out.print("[green]clean[/]")
        return 0
    out.print("[yellow]not clean[/]: run anchorline reindex, or let pending items drain")
    return 1


def cmd_sweep(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """Recover placeholders left by dead writers: delete empty ones, finalize partial ones."""
    report = pipeline.sweep(older_than=args.older_than)
    for message_id in report.deleted:
        out.print(Text(f"deleted   {visible(message_id)} (empty placeholder)"))
    for message_id in report.finalized:
        out.print(Text(f"finalized {visible(message_id)} (partial content, marked interrupted)"))
    for message_id in report.skipped:
        out.print(Text(f"skipped   {visible(message_id)} (written while sweeping)"))
    out.print(
        f"swept {report.total}: {len(report.deleted)} deleted,"
        f" {len(report.finalized)} finalized, {len(report.skipped)} skipped"
    )
    return 0


def cmd_plugins(pipeline: Pipeline, args: argparse.Namespace) -> int:
    """List the registered plugins and, per hook, the order its implementations run in."""
    pm = pipeline.plugin_manager
    table = Table(title="plugins")
    table.add_column("name")
    table.add_column("plugin", overflow="fold")
    for name, plugin in pm.list_name_plugin():
        table.add_row(Text(visible(str(name))), Text(masked_text(visible(repr(plugin)))))
    out.print(table)
    hooks = Table(title="hooks (implementations in call order)")
    hooks.add_column("hook")
    hooks.add_column("implementations", overflow="fold")
    for hook_name in sorted(pm.hook.__dict__):
        caller = getattr(pm.hook, hook_name)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            flags = [f for f in _IMPL_FLAGS if getattr(impl, f)]
            impls.append(visible(impl.plugin_name) + (f" ({', '.join(flags)})" if flags else ""))
        hooks.add_row(Text(hook_name), Text(" → ".join(impls) or "-"))
    out.print(hooks)
    if args.no_database:
        out.print(Text(visible(f"(no database at {os.path.abspath(args.db)}: the plugins a new"
                               " one would have)")))  # fmt: skip
    elif pipeline.settings.index is None and args.index != "none":
        location = visible(os.path.abspath(_index_location(args)))
        out.print(Text(f"no indexer: no index at {location} ('anchorline reindex' builds it)"))
    return 0


_IMPL_FLAGS = ("wrapper", "hookwrapper", "tryfirst", "trylast")


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the pipeline against raw apsw (and the peers, if installed) in one run; with
    --db postgresql://..., its writes against raw psycopg on that server."""
    from .bench import PAGE_SIZES, QUICK, Config, disk_full, run_bench
    from .bench.report import print_report, write_json

    config = QUICK if args.quick else Config()
    if args.index:  # its own run; five rounds are plenty for cases this long
        config = attrs.evolve(config, index=True, rounds=config.rounds if args.quick else 5)
    if args.bench_db is not None:
        config = attrs.evolve(config, db=_bench_server(args.bench_db))
    if args.rounds is not None:
        if args.rounds < 1:
            raise CLIError(f"--rounds: must be at least 1, got {args.rounds}", status=2)
        config = attrs.evolve(config, rounds=args.rounds)
    if args.no_peers:
        config = attrs.evolve(config, peers=False)
    if args.paging:
        config = attrs.evolve(config, page_sizes=PAGE_SIZES)
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
                config, workdir=Path(workdir), progress=lambda text: status.update(Text(text))
            )
        except Exception as e:
            if not disk_full(e):
                raise
            raise CLIError(
                f"the disk is full under {tempfile.gettempdir() if args.dir is None else args.dir}:"
                " a full bench needs about 1 GB of scratch space; choose a folder with --dir"
            ) from None
    print_report(report, out)
    if args.json is not None:
        write_json(report, args.json)
        out.print(Text(f"wrote {args.json}"))
    return 0


def _bench_server(url: str) -> str:
    import importlib.util

    scheme = url.partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise CLIError(
            f"--db: the bench measures a PostgreSQL server, give a postgresql:// URL, got"
            f" {url!r} (without --db it measures SQLite in a scratch folder)",
            status=2,
        )
    if importlib.util.find_spec("psycopg") is None:
        raise CLIError(
            "--db: the PostgreSQL bench needs psycopg: pip install 'anchorline[postgres]'"
        )
    return url


# --- opening the database ----------------------------------------------------

Command = Callable[[Pipeline, argparse.Namespace], int]

#: How a command uses the index: not at all; if it is there; it must be there;
#: it must be configured (and is created if need be); as configured.
IndexUse = Literal["unused", "if-present", "existing", "required", "any"]


@attrs.frozen
class Needs:
    """What a command needs before it opens the pipeline. Only ``creates``
    commands may create the database; the others refuse a missing one, so a
    command that only reads never leaves a file behind."""

    creates: bool = False
    index: IndexUse = "any"
    #: With no database file there, open an empty one in memory (``plugins``).
    missing_ok: bool = False
    #: The command waits on the index: a server that refuses or does not resolve
    #: fails it at once. (Writes do not wait, and an index worker waits outages out.)
    probe: bool = False


def _is_file(db: str) -> bool:
    """Whether ``--db`` names a file (not ``:memory:``, a ``file:`` URI or a server URL)."""
    return db != ":memory:" and "://" not in db and not db.startswith("file:")


def _index_location(args: argparse.Namespace) -> str:
    from anchorline.memory.index.vector_index import index_location

    return index_location(args.index, args.db)


def _is_folder(location: str) -> bool:
    """Whether an index location is a folder (not ``:memory:`` or a server URL)."""
    return location != ":memory:" and "://" not in location


def _open(args: argparse.Namespace) -> Pipeline:
    needs: Needs = args.needs
    db: str = args.db
    args.index_given = args.index is not None
    if args.index is None:
        args.index = DEFAULT_INDEX if "://" not in db else "none"
    index: str | None = parse_index(args.index)  # a mistyped location is the first thing to say
    embedder_kind, _ = parse_embedder(args.embedder or os.environ.get(EMBEDDER_ENV) or "hashing")
    if not db:
        raise CLIError(f"--db: empty; name a database file (the default is ./{DEFAULT_DB})")
    check_location(db)  # a mistyped URL, before it is taken for a file name
    if _is_file(db) and os.path.isdir(db):
        raise CLIError(f"--db: {db} is a folder, not a database file")
    args.no_database = needs.missing_ok and _is_file(db) and not os.path.exists(db)
    if args.no_database:
        db, index = ":memory:", None
    elif not needs.creates and _is_file(db):
        _refuse_missing(db)
    if index is None and needs.index in ("existing", "required"):
        if "://" in db and not (args.index_given or os.environ.get(INDEX_ENV)):
            raise CLIError(
                f"no index: a database server has none by default; name the Qdrant server"
                f" with --index URL (or ${INDEX_ENV})"
            )
        raise CLIError(f"no index: drop --index none (or unset {INDEX_ENV}=none)")
    if index is not None and needs.index in ("if-present", "existing"):
        location = _index_location(args)
        if _is_folder(location) and not os.path.exists(location):
            if needs.index == "existing":
                raise CLIError(
                    f"no index at {os.path.abspath(location)}: build it with 'anchorline reindex'"
                )
            index = None
    if needs.index == "unused":
        index = None
    if "://" in db:  # a server: looked for (one attempt) once the rest is right
        _refuse_missing(db, creates=needs.creates)
    embedder = args.embedder if index is not None else None
    if index is not None and embedder is None and not os.environ.get(EMBEDDER_ENV):
        location = _index_location(args)
        if _is_folder(location):  # the embedder that built it, unless told another
            embedder = remembered_embedder(location)
            if embedder is not None:
                embedder_kind, _ = parse_embedder(embedder)
    if index is not None and needs.probe:
        from anchorline.memory.index.vector_index import is_server

        if is_server(index) and (error := _unreachable(index, 6333)) is not None:
            # server_error's words, without importing qdrant_client (a second) to say them.
            raise IndexUnavailable(
                f"{args.command}: could not reach the Qdrant server at {masked(index)}"
                f" ({error}); check that it is running and that the URL is right"
            )
        url = os.environ.get(EMBEDDER_URL_ENV) or DEFAULT_EMBEDDER_URL
        if embedder_kind == "openai" and (error := _unreachable(url, None)) is not None:
            raise CLIError(f"--embedder: the embedding server at {masked(url)} cannot be"
                           f" reached ({error}): check that it runs there, the URL's host"
                           " and port, and the network")  # fmt: skip
    if autoload_enabled():
        check_entrypoints()  # a broken one fails the command before a database is created
    return Pipeline.open(db, index=index, embedder=embedder)


def _open_input(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """Open what the command reads (``ingest FILE``) into ``args.input``, before the
    database: an input that cannot be read fails the command without creating one."""
    file: str | None = getattr(args, "file", None)
    if file is None:
        return contextlib.nullcontext()
    if file == "-":
        if sys.stdin is None:
            raise CLIError("ingest -: standard input is closed; give a FILE instead")
        args.input = sys.stdin.buffer
        return contextlib.nullcontext()
    try:
        args.input = open(file, "rb")  # noqa: SIM115 (closed by the caller's with)
    except OSError as e:
        raise CLIError(f"cannot read {file}: {e.strerror}") from None
    return contextlib.closing(args.input)


def _unreachable(url: str, port: int | None) -> OSError | None:
    """Why the server at ``url`` cannot be reached, if waiting will not mend it: its host
    name does not resolve, it refuses the connection, or there is no network; else
    ``None`` (no answer yet is left to the retries). ``port``: the default when ``url``
    has none (else by its scheme)."""
    import errno
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # said where the URL is parsed
    try:
        socket.create_connection((parts.hostname or "localhost", port), timeout=2).close()
    except (socket.gaierror, ConnectionRefusedError) as e:
        return e
    except OSError as e:
        return e if e.errno == errno.ENETUNREACH else None
    return None


def _refuse_missing(db: str, *, creates: bool = False) -> None:
    """Raise if no store is at ``db`` yet (a command that only reads creates none), or if
    it cannot be reached: one attempt, so that what waiting cannot mend is said at once."""
    from anchorline.memory.stores import missing

    why = missing(db)
    if why is not None and not creates:
        how = "'anchorline ingest FILE'" + (" (or 'anchorline demo')" if _is_file(db) else "")
        raise CLIError(f"{why}: create one with {how}, or name another with --db or ${DB_ENV}")


def _one_line(text: str) -> str:
    """``text`` on one line, its control characters escaped."""
    return visible(" ".join(text.splitlines()))


_MAX_SECONDS = 100 * 365 * 24 * 3600  # a century: more is a typo, and overflows a timestamp


def _seconds(value: str) -> float:
    """An argparse type: a number of seconds from zero to a century."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= _MAX_SECONDS:  # NaN fails both
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0 to {_MAX_SECONDS}, got {value!r}"
        )
    return seconds


def _positive(value: str) -> int:
    """An argparse type: a whole number, one or more."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return number


#: The options every command that opens a database takes, before or after its name.
_COMMON_OPTIONS = ("--db", "--index", "--embedder")


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--db``, ``--index`` and ``--embedder``: on the top parser with their defaults, on
    a command's parser without (so that one given before the command is kept)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--db",
        default=default(os.environ.get(DB_ENV) or DEFAULT_DB),
        help=f"database file or postgresql:// URL (default: ${DB_ENV} or ./{DEFAULT_DB})",
    )
    parser.add_argument(
        "--index",
        default=default(os.environ.get(INDEX_ENV) or None),
        help="vector index: local (a folder next to the database), :memory:, a Qdrant URL,"
        f" or none (default: ${INDEX_ENV}, else {DEFAULT_INDEX} for a database file and none"
        " for a database server)",
    )
    parser.add_argument(
        "--embedder",
        default=default(None),
        help=f"the index's embedder: {EMBEDDER_FORMS}, at ${EMBEDDER_URL_ENV} (default"
        f" {DEFAULT_EMBEDDER_URL}) with the key in $OPENAI_API_KEY"
        f" (default: ${EMBEDDER_ENV}, else the one the index folder was built with, else"
        " hashing)",
    )


def _doc(fn: Callable[..., Any]) -> str:
    """A command's docstring as its help shows it (without reST's double backticks)."""
    return (fn.__doc__ or "").replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anchorline", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"anchorline {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, fn: Command, needs: Needs, **kwargs: Any) -> argparse.ArgumentParser:
        # The docstring's first sentence, however many lines it runs over.
        summary = " ".join(_doc(fn).split("\n\n")[0].split()).split(". ")[0]
        p = sub.add_parser(name, help=summary, description=_doc(fn), allow_abbrev=False,
                           **kwargs)  # fmt: skip
        _add_common(p, top=False)
        p.set_defaults(func=fn, needs=needs)
        return p

    add("demo", cmd_demo, Needs(creates=True, probe=True))
    show = add("show", cmd_show, Needs(index="unused"))
    show.add_argument("conversation_id")
    show.add_argument("--json", action="store_true", help="one JSON object per message")
    ingest = add("ingest", cmd_ingest, Needs(creates=True))
    ingest.add_argument("file", help="a file of JSON lines, or - for standard input")
    ingest.add_argument("--atomic", action="store_true", help="apply all lines or none")
    add("plugins", cmd_plugins, Needs(index="if-present", missing_ok=True))
    search = add("search", cmd_search, Needs(index="existing", probe=True))
    search.add_argument("query")
    search.add_argument("--conversation", help="only this conversation")
    search.add_argument("--limit", type=_positive, default=5, help="how many hits (default 5)")
    search.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        help="seconds to wait for pending indexing first (default 0: search what is indexed)",
    )
    add("reindex", cmd_reindex, Needs(index="required", probe=True))
    sweep = add("sweep", cmd_sweep, Needs(index="if-present"))
    sweep.add_argument(
        "--older-than",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="only placeholders not written for S seconds (default 60)",
    )
    add("doctor", cmd_doctor, Needs(index="existing", probe=True))
    add("index-worker", cmd_index_worker, Needs(index="required"))
    index_commands = sub.add_parser("index", help="work on the vector index", allow_abbrev=False)
    index_sub = index_commands.add_subparsers(dest="index_command", required=True,
                                              parser_class=_Parser)  # fmt: skip
    optimize = index_sub.add_parser(
        "optimize",
        help=_doc(cmd_index_optimize).split(". ")[0],
        description=_doc(cmd_index_optimize),
        allow_abbrev=False,
    )
    _add_common(optimize, top=False)
    optimize.set_defaults(standalone=cmd_index_optimize)
    optimize.add_argument("database", nargs="?", metavar="DB", help="default: --db")
    changes_arguments(add("changes", cmd_changes, Needs(index="unused")), _positive)
    copy = sub.add_parser(
        "copy",
        help="copy every conversation to another store",
        description=_doc(cmd_copy),
        allow_abbrev=False,
    )
    copy.set_defaults(standalone=cmd_copy)
    copy.add_argument("source", help="a database file or a postgresql:// URL")
    copy.add_argument("target", help="a database file or a postgresql:// URL (created if new)")
    bench = sub.add_parser(
        "bench", help=_doc(cmd_bench), description=_doc(cmd_bench), allow_abbrev=False
    )
    bench.set_defaults(standalone=cmd_bench)
    bench.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    bench.add_argument("--rounds", type=int, help="rounds to alternate (default 11; quick 2)")
    bench.add_argument("--no-peers", action="store_true", help="leave out the peer libraries")
    bench.add_argument(
        "--paging",
        action="store_true",
        help="also page one conversation of 10k and of 1M messages by seq (slow to fill)",
    )
    bench.add_argument(
        "--dir", type=Path, metavar="PATH", help="scratch folder (default: the system's temp)"
    )
    bench.add_argument(
        "--index",
        action="store_true",
        help="only the embedded index: Qdrant Edge against qdrant-client's local mode at 10k"
        " and 50k points (several minutes)",
    )
    bench.add_argument(
        "--db",
        dest="bench_db",
        metavar="URL",
        help="a postgresql:// URL: time the writes on that server, in scratch databases it"
        " drops at the end (the user needs CREATEDB)",
    )
    return parser


#: The arguments that reach the store or the index, by the name to show.
_STORED_ARGUMENTS = {
    "db": "--db",
    "index": "--index",
    "conversation_id": "conversation_id",
    "conversation": "--conversation",
    "query": "query",
}


def _check_text(args: argparse.Namespace) -> None:
    # Bytes of the command line that are not UTF-8 arrive as lone surrogates,
    # which no store can hold. (A file to read may have any name.)
    for dest, shown in _STORED_ARGUMENTS.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raw = value.encode(errors="surrogateescape").decode(errors="backslashreplace")
                raise CLIError(f"{shown}: '{raw}' is not valid UTF-8", status=2) from None


class _OneLine(logging.Formatter):
    """A log record as one line: the exception's type and text, not its traceback.

    Each is a warning: the library logs what the command went on after (an
    observer that failed, an index that is down). What fails the command is
    reported once, as its error, with a non-zero exit status.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.split(".")[0] != "anchorline":  # the driver's: say whose it is
            message = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", message).rstrip(": ")
            message = f"{record.name}: {message}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f": {type(error).__name__}: {error}"
        return f"anchorline: warning: {masked_text(_one_line(message))}"


class _OncePerDriverMessage(logging.Filter):
    """Lets a warning of the database driver's through once: its pool says "discarding
    closed connection" for each connection a restarted server dropped, which the store
    replaces by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "anchorline":
            return True
        # Without the object's address: "<PooledConnection [BAD] at 0x7f...>".
        said = re.sub(r" ?<[^<>]* at 0x[0-9a-f]+>", "", record.getMessage())
        if said in self.seen:
            return False
        self.seen.add(said)
        return True


def _log_to_stderr() -> logging.Handler:
    """What the library logs (an observer that failed, an index that is down) goes to
    stderr one line each; with $ANCHORLINE_DEBUG set, with its traceback."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get(DEBUG_ENV, "") in ("", "0"):
        handler.setFormatter(_OneLine())
        handler.addFilter(_OncePerDriverMessage())
    handler.setLevel(logging.WARNING)
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return handler


#: The loggers whose warnings a command shows: the library's, and psycopg's (its
#: pool logs each connection it loses, on several lines).
_LOGGERS = ("anchorline", "psycopg")


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            # Stored text the terminal cannot show is escaped, never a crash.
            stream.reconfigure(errors="backslashreplace")
    handler = _log_to_stderr()
    try:
        status = _run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _stdout_closed()
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)


def _stdout_closed() -> int:
    """The reader of stdout went away (``anchorline changes | head -1``): stop quietly,
    with the status of a process that SIGPIPE ended, as other commands do."""
    # Python flushes stdout again at exit; let that write go nowhere.
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13


def _error(message: str) -> None:
    print(f"anchorline: error: {masked_text(_one_line(message))}", file=sys.stderr)


def _read_only(args: argparse.Namespace, error: BaseException) -> str | None:
    """What to say when ``error`` comes of a database file (or its index folder) on a
    read-only folder: SQLite creates its -wal and -shm files beside the database, even
    to read it, and ``index optimize`` rewrites the index folder."""
    import errno

    db = getattr(args, "database", None) or getattr(args, "db", None)
    if not isinstance(db, str) or not _is_file(db) or not os.path.exists(db):
        return None
    cause: BaseException | None = error
    while cause is not None:
        text = str(cause)
        if (isinstance(cause, OSError) and cause.errno == errno.EROFS) or any(
            words in text for words in ("unable to open database file", "Read-only file system")
        ):
            break
        cause = cause.__cause__ or getattr(cause, "last_cause", None)
    folder = os.path.dirname(os.path.abspath(db))
    if cause is None or _writable(folder):
        return None
    if getattr(args, "standalone", None) is cmd_index_optimize:
        return (
            f"index optimize: the index of {db} is in a read-only folder ({folder}), and"
            " optimizing rewrites it: make the folder writable, then run it again"
        )
    return (
        f"database {db}: its folder {folder} is read-only, and SQLite must create its -wal"
        " and -shm files beside the database even to read it: make the folder writable, or"
        " copy the database to a writable folder ('anchorline copy DB NEW.db') and use that"
    )


def _writable(folder: str) -> bool:
    """Whether ``folder`` takes new files: not on a read-only mount, and (for a user
    other than root, whom permissions do not stop) writable by its permissions."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return True
    return os.access(folder, os.W_OK)


def _run(argv: Sequence[str] | None) -> int:
    args = argparse.Namespace()
    try:
        args = _parse(argv)
        if prepare := getattr(args, "prepare", None):
            prepare(args, CLIError)
        _check_text(args)
        if standalone := getattr(args, "standalone", None):
            status: int = standalone(args)
            return status
        with _open_input(args), _open(args) as pipeline:
            status = args.func(pipeline, args)
        return status
    except CLIError as e:
        _error(str(e))
        return e.status
    except BrokenPipeError:
        raise  # stdout's reader left: see main()
    except (AnchorlineError, OSError) as e:
        _error(_read_only(args, e) or str(e))
        return 1
    except storage_failures() as e:
        _error(_read_only(args, e) or f"database {masked(args.db)}: {e}")
        return 1
    except KeyboardInterrupt:
        print("anchorline: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        _error(
            f"unexpected {type(e).__name__}: {e}"
            f" (a bug: set {DEBUG_ENV}=1 for the traceback, and please report it)"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
