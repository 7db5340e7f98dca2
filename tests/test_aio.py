"""The asyncio API: one writer thread per pipeline, cancellation never half-applies an op."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Generator
from pathlib import Path

import apsw
import pytest

from anchorline import (
    Add,
    AsyncPipeline,
    Conflict,
    Context,
    InvalidOp,
    Limits,
    PersistOp,
    PersistResult,
    Reserve,
    UpdateContent,
    hookimpl,
)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def rows(path: Path) -> list[tuple[str, str, str]]:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute(
            "SELECT id, status, content FROM messages ORDER BY created_at"
        ).fetchall()  # type: ignore[return-value]
    finally:
        conn.close()


def test_async_writes_and_reads(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPipeline.open(str(tmp_path / "a.db"), load_entrypoints=False) as ap:
            added = await ap.persist(Add(conversation_id="c", role="user", content="hi"))
            results = await ap.persist_many(
                [Reserve(conversation_id="c", role="assistant", message_id="r1")]
            )
            assert results[0].kind == "reserve"
            assert (await ap.get(added.message.id)) == added.message  # type: ignore[union-attr]
            assert [m.id for m in await ap.messages("c")] == [added.message.id, "r1"]  # type: ignore[union-attr]
            assert (await ap.sweep(older_than=3600)).total == 0

    run(main())


def test_writes_run_on_one_writer_thread_not_the_event_loop(tmp_path: Path) -> None:
    threads: set[str] = set()

    class WhichThread:
        @hookimpl
        def after_persist(self) -> None:
            threads.add(threading.current_thread().name)

    async def main() -> None:
        async with await AsyncPipeline.open(
            str(tmp_path / "a.db"), plugins=[WhichThread()], load_entrypoints=False
        ) as ap:
            await asyncio.gather(
                *(
                    ap.persist(Add(conversation_id="c", role="user", content=str(i)))
                    for i in range(20)
                )
            )

    run(main())
    assert len(threads) == 1 and threads.pop().startswith("anchorline-writer")


def test_async_stream_stores_text_as_update_content_does(tmp_path: Path) -> None:
    async def main() -> tuple[object, object, object]:
        async with await AsyncPipeline.open(str(tmp_path / "a.db"), load_entrypoints=False) as ap:
            async with ap.stream("c", flush_interval=3600) as s:
                for token in ("a", "b", "c"):
                    await s.append(token)
                await s.flush()
                partial = await ap.get(s.message_id)
            stored = await ap.get(s.message_id)
            assert stored is not None and stored.status == "complete"
            direct = await ap.persist(Reserve(conversation_id="d", role="assistant"))
            same = await ap.persist(UpdateContent(message_id=direct.message.id, content="abc"))  # type: ignore[union-attr]
            return partial.content, stored.content, same.message.content  # type: ignore[union-attr]

    assert run(main()) == ("abc", "abc", "abc")


def test_cancelling_mid_stream_keeps_what_was_streamed(tmp_path: Path) -> None:
    path = tmp_path / "a.db"

    async def agent(ap: AsyncPipeline, ids: list[str], started: asyncio.Event) -> None:
        async with ap.stream("c", flush_interval=0) as s:
            ids.append(s.message_id)
            await s.append("tokens before the cancel")
            started.set()
            await asyncio.sleep(3600)  # waiting for the model: cancelled here

    async def main() -> str:
        async with await AsyncPipeline.open(str(path), load_entrypoints=False) as ap:
            ids: list[str] = []
            started = asyncio.Event()
            task = asyncio.create_task(agent(ap, ids, started))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stored = await ap.get(ids[0])
            assert stored is not None and stored.status == "complete"
            assert stored.metadata == {"interrupted": True, "error": "CancelledError"}
            return str(stored.content)

    assert run(main()) == "tokens before the cancel"


def test_cancelling_before_anything_streamed_deletes_the_placeholder(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncPipeline.open(str(tmp_path / "a.db"), load_entrypoints=False) as ap:
            ids: list[str] = []

            async def agent() -> None:
                async with ap.stream("c") as s:
                    ids.append(s.message_id)
                    await asyncio.sleep(3600)

            task = asyncio.create_task(agent())
            while not ids:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await ap.get(ids[0]) is None

    run(main())


def test_an_async_stream_overtaken_by_its_retry_never_rewrites_the_finished_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="anchorline")

    async def main() -> None:
        async with await AsyncPipeline.open(str(tmp_path / "a.db"), load_entrypoints=False) as ap:
            with pytest.raises(Conflict, match="changed by another writer"):
                async with ap.stream("c", client_message_id="t", flush_interval=0) as first:
                    await first.append("A1 ")
                    async with ap.stream("c", client_message_id="t", flush_interval=0) as retry:
                        await retry.append("B1 ")
                    await first.append("A2 ")  # the retry finished the message: refused
            stored = await ap.get(first.message_id)
            assert stored is not None and stored.status == "complete"
            assert stored.content == "A1 B1 " and stored.metadata == {}
            # A final write after the other stream wrote is refused; the other one wins.
            async with ap.stream("d", client_message_id="u", flush_interval=0) as first:
                await first.append("A1 ")
                with pytest.raises(Conflict, match="changed by another writer"):
                    async with ap.stream("d", client_message_id="u", flush_interval=9) as retry:
                        await retry.append("B1 ")
                        await first.append("A2 ")
            stored = await ap.get(first.message_id)
            assert stored is not None and stored.content == "A1 A2 " and stored.metadata == {}

    run(main())
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


@pytest.mark.parametrize(
    ("flush_interval", "kept"), [(0, "x" * 80), (3600, None)], ids=["flushed", "never-flushed"]
)
def test_async_content_over_the_limit_keeps_what_was_written_marked_interrupted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, flush_interval: float, kept: str | None
) -> None:
    caplog.set_level(logging.WARNING, logger="anchorline")

    async def main() -> None:
        async with await AsyncPipeline.open(
            str(tmp_path / "a.db"), limits=Limits(max_content_bytes=100), load_entrypoints=False
        ) as ap:
            with pytest.raises(InvalidOp, match="max_content_bytes"):
                async with ap.stream("c", flush_interval=flush_interval) as s:
                    for delta in ("x" * 40, "x" * 40, "y" * 40):
                        await s.append(delta)
            stored = await ap.get(s.message_id)
            if kept is None:
                assert stored is None
            else:
                assert stored is not None and stored.content == kept
                assert stored.metadata == {"interrupted": True, "error": "InvalidOp"}

    run(main())
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]


class Slow:
    """Holds each write inside the chain for a while, so a cancel lands mid-op."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.entered = threading.Event()

    @hookimpl(wrapper=True)
    def persist(
        self, op: PersistOp, context: Context
    ) -> Generator[None, PersistResult, PersistResult]:
        self.entered.set()
        result = yield
        time.sleep(self.seconds)  # after the terminal wrote, before the commit
        return result


def test_cancelling_an_awaiting_persist_never_half_applies_it(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    slow = Slow(0.3)

    async def main() -> None:
        async with await AsyncPipeline.open(
            str(path), plugins=[slow], load_entrypoints=False
        ) as ap:
            running = asyncio.create_task(
                ap.persist_many(
                    [
                        Add(conversation_id="c", role="user", content="one", message_id="m1"),
                        Add(conversation_id="c", role="user", content="two", message_id="m2"),
                    ]
                )
            )
            queued = asyncio.create_task(
                ap.persist(Add(conversation_id="c", role="user", content="three", message_id="m3"))
            )
            await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait)
            running.cancel()  # mid-op: the op has started on the writer thread
            queued.cancel()  # not started yet: dropped
            for task in (running, queued):
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main())
    stored = {row[0] for row in rows(path)}
    # The started op committed in full (both rows), the queued one not at all.
    assert stored == {"m1", "m2"}
