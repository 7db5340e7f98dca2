"""``anchorline bench``: the command, like the CLI's others (its parser and its run)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from rich.text import Text

from anchorline.cli.common import CLIError, add_command, doc
from anchorline.cli.output import out

if TYPE_CHECKING:
    from anchorline.cli.common import Subcommands


def add(sub: Subcommands) -> None:
    bench = add_command(sub, "bench", run, None, common=False, help=doc(run))
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


def run(args: argparse.Namespace, pipeline: None) -> int:
    """Time the pipeline against raw apsw (and the peers, if installed) in one run; with
    --db postgresql://..., its writes against raw psycopg on that server."""
    from . import PAGE_SIZES, QUICK, Config, disk_full, run_bench
    from .report import print_report, write_json

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
