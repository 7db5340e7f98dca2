"""Case 7: the stores a user might pick instead, at their own default settings.

Installed with ``pip install 'anchorline[bench]'``. A peer that is not
installed is skipped, and the report says so and how to install it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .rounds import Case, Comparison, Prepare, Run
from .workloads import CONTENT, fresh, persist_batches, timed_pipeline

INSTALL = "pip install 'anchorline[bench]'"
OPENAI = "OpenAI Agents SQLiteSession"
LANGCHAIN = "LangChain SQLChatMessageHistory"


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _openai_cases(workdir: Path, items: int, batches: int, batch_size: int,
                  facts: dict[str, str]) -> list[Case]:  # fmt: skip
    from agents import SQLiteSession

    item: Any = {"role": "assistant", "content": CONTENT}

    def prepare(per_call: int) -> Prepare:
        def make() -> Run:
            path = fresh(workdir / f"openai-{per_call}.db")
            session = SQLiteSession("bench", str(path))

            def run(count: int) -> float:
                async def body() -> float:
                    started = time.perf_counter()
                    for _ in range(count):
                        await session.add_items([item] * per_call)
                    return time.perf_counter() - started

                took = asyncio.run(body())
                conn = session._get_connection()  # to state the pragmas it really ran with
                journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
                synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
                facts[OPENAI] = f"journal_mode={journal}, synchronous={_SYNC[synchronous]}"
                session.close()
                return took

            return run

        return make

    return [
        Case(name="OpenAI add_items x1", unit="op", count=items, prepare=prepare(1),
             note="one item per call"),
        Case(name=f"OpenAI add_items x{batch_size}", unit="batch", count=batches,
             prepare=prepare(batch_size), note=f"{batch_size} items per call"),
    ]  # fmt: skip


_SYNC: dict[object, str] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _langchain_cases(workdir: Path, items: int, facts: dict[str, str]) -> list[Case]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community announces its sunset on import
        from langchain_community.chat_message_histories import SQLChatMessageHistory
    from langchain_core.messages import AIMessage

    def make() -> Run:
        path = fresh(workdir / "langchain.db")
        history = SQLChatMessageHistory(session_id="bench", connection=f"sqlite:///{path}")

        def run(count: int) -> float:
            started = time.perf_counter()
            for _ in range(count):
                history.add_message(AIMessage(content=CONTENT))
            took = time.perf_counter() - started
            with history.engine.connect() as conn:
                journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            synchronous = _SYNC.get(synchronous, synchronous)
            facts[LANGCHAIN] = f"journal_mode={journal}, synchronous={synchronous}"
            history.engine.dispose()
            return took

        return run

    return [Case(name="LangChain add_message", unit="op", count=items, prepare=make)]


def _working(built: Callable[[], list[Case]], name: str, skipped: list[str]) -> list[Case]:
    """The peer's cases, each tried once: a peer version that fails is skipped, not fatal."""
    try:
        cases = built()
        for case in cases:
            case.prepare()(1)
    except Exception as e:
        skipped.append(f"{name}: failed on a first try ({type(e).__name__}: {e})")
        return []
    return cases


def peer_cases(workdir: Path, *, items: int, batches: int, batch_size: int,
               facts: dict[str, str], skipped: list[str],
               ) -> tuple[list[Case], list[Comparison]]:  # fmt: skip
    """The peers that are installed and work, our matching cases, and the 2x targets."""
    cases: list[Case] = []
    comparisons: list[Comparison] = []
    ours_single = "persist(Add)"  # case 1, timed in the same rounds
    ours_batch = f"persist_many({batch_size})"
    if missing := _missing("agents"):
        skipped.append(f"{OPENAI}: {', '.join(missing)} not installed ({INSTALL})")
    elif openai := _working(
        lambda: _openai_cases(workdir, items, batches, batch_size, facts), OPENAI, skipped
    ):
        cases += openai
        cases.append(
            Case(name=ours_batch, unit="batch", count=batches,
                 prepare=timed_pipeline(workdir / "peer-many.db", persist_batches(batch_size)))
        )  # fmt: skip
        comparisons += [
            Comparison(label="persist(Add) vs OpenAI x1", ours=ours_single,
                       reference="OpenAI add_items x1", kind="speedup", low=2.0),
            Comparison(label=f"{ours_batch} vs OpenAI x{batch_size}", ours=ours_batch,
                       reference=f"OpenAI add_items x{batch_size}", kind="speedup", low=2.0),
        ]  # fmt: skip
    if missing := _missing("langchain_community", "langchain_core", "sqlalchemy", "greenlet"):
        skipped.append(f"{LANGCHAIN}: {', '.join(missing)} not installed ({INSTALL})")
    elif langchain := _working(lambda: _langchain_cases(workdir, items, facts), LANGCHAIN, skipped):
        cases += langchain
        comparisons.append(
            Comparison(label="persist(Add) vs LangChain", ours=ours_single,
                       reference="LangChain add_message", kind="speedup", low=2.0)
        )  # fmt: skip
    return cases, comparisons
