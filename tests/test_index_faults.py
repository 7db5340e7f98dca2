"""Faults of the index itself: a server that is down or not Qdrant, a folder that vanishes.

Real parts throughout: a closed port, a real HTTP server on localhost, a real
folder removed with ``shutil.rmtree``.
"""

from __future__ import annotations

import http.server
import logging
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anchorline import Add, Delete, IndexUnavailable, Message, Pipeline
from anchorline.cli import main
from anchorline.memory.index.vector_index import Point, VectorIndex
from anchorline.plugins.indexer import Indexer


def indexer(pipeline: Pipeline) -> Indexer:
    found = pipeline.plugin_manager.get_plugin("indexer")
    assert isinstance(found, Indexer)
    return found


def the_index(pipeline: Pipeline) -> VectorIndex:
    index = indexer(pipeline).index
    assert index is not None
    return index


# --- a server that is down, or is not Qdrant -----------------------------------


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nothing listens on: bound, then closed, so the kernel refuses it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers every request the same way: ``server.mode`` says how."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        mode = getattr(self.server, "mode", "500")
        if mode == "not http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            return
        if mode == "500":
            status, kind, body = 500, "text/plain", b"Service Unavailable: storage is full"
        else:  # a web page where Qdrant's JSON should be
            status, kind, body = 200, "text/html", b"<html><body>It works!</body></html>"
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["500", "not json", "not http"])
def broken_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.mode = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


OPERATIONS: dict[str, Callable[[VectorIndex], object]] = {
    "upsert": lambda ix: ix.upsert([Point("m1", [1.0] + [0.0] * 7, {"message_id": "m1"})]),
    "set_payload": lambda ix: ix.set_payload("m1", {"message_id": "m1"}),
    "delete": lambda ix: ix.delete(["m1"]),
    "search": lambda ix: ix.search([1.0] + [0.0] * 7),
    "count": lambda ix: ix.count(),
    "existing": lambda ix: ix.existing(["m1"]),
    "message_ids": lambda ix: ix.message_ids(),
    "payload": lambda ix: ix.payload("m1"),
    "recreate": lambda ix: ix.recreate(),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_no_client_error_escapes_the_index_when_the_server_refuses(
    refused_url: str, operation: str
) -> None:
    index = VectorIndex(refused_url, model="m", dimension=8)
    try:
        with pytest.raises(IndexUnavailable) as raised:
            OPERATIONS[operation](index)
    finally:
        index.close()
    assert type(raised.value) is IndexUnavailable
    message = str(raised.value)
    assert f"could not reach the Qdrant server at {refused_url}" in message
    assert "Connection refused" in message and "\n" not in message


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_no_client_error_escapes_the_index_when_the_server_is_broken(
    broken_server: str, operation: str
) -> None:
    index = VectorIndex(broken_server, model="m", dimension=8)
    try:
        with pytest.raises(IndexUnavailable) as raised:
            OPERATIONS[operation](index)
    finally:
        index.close()
    message = str(raised.value)
    assert broken_server in message and "\n" not in message
    assert "answered 500 Internal Server Error" in message or "not answer as Qdrant" in message


def test_the_cli_says_the_server_could_not_be_reached(
    refused_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "chat.db")
    Pipeline.open(db, load_entrypoints=False).close()
    status = main(["--db", db, "--index", refused_url, "search", "hello"])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"anchorline: error: search: could not reach the Qdrant server at {refused_url}"
        " ([Errno 111] Connection refused); check that it is running and that the URL is right\n"
    )


def test_writes_to_a_broken_server_wait_with_an_error_that_names_it(
    broken_server: str, tmp_path: Path
) -> None:
    with Pipeline.open(
        str(tmp_path / "chat.db"), index=broken_server, index_sync=True, load_entrypoints=False
    ) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="kept while broken"))
        status = pipeline.index_status()
        assert status.pending == 1 and status.failing == 1
        assert status.last_error is not None
        assert status.last_error.startswith("IndexUnavailable: ") and broken_server in (
            status.last_error
        )
        with pytest.raises(IndexUnavailable, match="1 message"):
            pipeline.flush_index()
        assert [m.content for m in pipeline.messages("c")] == ["kept while broken"]


# --- an index folder removed while open ----------------------------------------


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("anchorline") and r.levelno >= logging.WARNING
    ]


def complete_ids(pipeline: Pipeline, conversation_id: str) -> set[str]:
    return {m.id for m in pipeline.messages(conversation_id) if m.status == "complete"}


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "background"])
def test_an_index_folder_removed_while_open_is_refilled_from_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sync: bool
) -> None:
    caplog.set_level(logging.INFO, logger="anchorline")
    db = str(tmp_path / "chat.db")
    folder = tmp_path / "chat.db.index"
    with Pipeline.open(db, index="local", index_sync=sync, load_entrypoints=False) as pipeline:
        for i in range(10):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"before {i}"))
        pipeline.flush_index(timeout=30)
        assert folder.is_dir()
        shutil.rmtree(folder)
        for i in range(10):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"after {i}"))
        pipeline.flush_index(timeout=30)
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=30)
        hits = pipeline.search("before after", limit=50)
        assert {h.message.id for h in hits} == complete_ids(pipeline, "c")
        assert len(hits) == 20
        report = indexer(pipeline).doctor()
        assert report.clean and report.points == report.indexable == 20, report
    warned = warnings_logged(caplog)
    assert 1 <= len(warned) <= 3, warned
    assert any("queued 10 complete message(s)" in w for w in warned)  # the ones indexed before


def test_a_folder_that_cannot_be_made_again_is_reported_once_and_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="anchorline")
    db = str(tmp_path / "chat.db")
    folder = tmp_path / "chat.db.index"
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="indexed first"))
        shutil.rmtree(folder)
        folder.write_text("a file where the folder was")  # the folder cannot come back
        for i in range(5):
            pipeline.persist(Add(conversation_id="c", role="user", content=f"while broken {i}"))
        with pytest.raises(IndexUnavailable, match="still waiting") as raised:
            pipeline.flush_index(timeout=2)
        assert str(folder) in str(raised.value)
        warned = warnings_logged(caplog)
        # Once when it broke; not once per retry (the flush alone retried for 2 s).
        assert 1 <= len(warned) <= 2, warned
        assert all("IndexUnavailable" in w and str(folder) in w for w in warned), warned
        assert len(pipeline.messages("c")) == 6  # every write landed
        folder.unlink()
        pipeline.flush_index(timeout=30)
        assert len(pipeline.search("indexed broken", limit=10)) == 6
        assert indexer(pipeline).doctor().clean
    assert any("works again" in r.getMessage() for r in caplog.records)


# --- the index checked against the database when it opens ------------------------


def add_some(pipeline: Pipeline, texts: int, textless: int) -> tuple[list[Message], list[str]]:
    """``texts`` messages with text, and ``textless`` tool calls that have none to index."""
    added = [
        pipeline.persist(Add(conversation_id="c", role="user", content=f"note {i}")).message
        for i in range(texts)
    ]
    calls = [
        pipeline.persist(
            Add(conversation_id="c", role="assistant", content=[{"type": "tool_use", "id": "t"}])
        ).message.id
        for _ in range(textless)
    ]
    return added, calls


def test_an_index_missing_points_is_refilled_when_it_opens(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        added, calls = add_some(pipeline, texts=12, textless=5)
        for message_id in calls[:2]:
            pipeline.persist(Delete(message_id=message_id))
        lost = added[0].id
        the_index(pipeline).delete([lost])  # an older copy of the folder, say
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        pipeline.flush_index(timeout=30)
        report = indexer(pipeline).doctor()
        assert report.clean and report.points == 12, report
        assert lost in {h.message.id for h in pipeline.search("note", limit=20)}


def test_a_whole_index_with_messages_without_text_is_checked_by_counts_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "chat.db")
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        added, calls = add_some(pipeline, texts=8, textless=6)
        pipeline.persist(Delete(message_id=added[0].id))
        pipeline.persist(Delete(message_id=calls[0]))
        assert indexer(pipeline).doctor().clean
    looked_up: list[list[str]] = []
    real = VectorIndex.existing

    def spy(self: VectorIndex, message_ids: list[str], batch: int = 1000) -> set[str]:
        looked_up.append(list(message_ids))
        return real(self, message_ids, batch)

    monkeypatch.setattr(VectorIndex, "existing", spy)
    with Pipeline.open(db, index="local", index_sync=True, load_entrypoints=False) as pipeline:
        assert indexer(pipeline).reconcile() == 0
        assert looked_up == []  # 7 points + 5 without text = 12 complete: no scan by id
