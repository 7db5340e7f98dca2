"""``anchorline index-worker``: the index outbox drained until stopped."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import TYPE_CHECKING

from rich.text import Text

from anchorline.memory.stores import masked

from ..runner import Pipeline
from .common import Needs, add_command
from .output import out, visible

if TYPE_CHECKING:
    from .common import Subcommands


def add(sub: Subcommands) -> None:
    add_command(sub, "index-worker", run, Needs(index="required"))


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Drain the index outbox until stopped (SIGTERM or Ctrl-C), for deployments whose
    agent processes open their pipelines with ``index_drain=False``."""
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
