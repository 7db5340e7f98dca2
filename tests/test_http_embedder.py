"""The OpenAI-compatible HTTP embedder, against a real HTTP server the tests start."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anchorline import Add, ConfigurationError, IndexUnavailable, Pipeline
from anchorline.memory.index.embedders.http import HttpEmbedder
from anchorline.memory.retry import RetryPolicy

DIMENSION = 8
KEY = "sk-test-secret-key"
#: Quick retries, so that a test of giving up takes a fraction of a second.
QUICK = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, deadline=10.0)


def vector(text: str) -> list[float]:
    """What the server answers for ``text``: a fixed vector derived from its hash."""
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 - 0.5 for b in digest[:DIMENSION]]


class EmbeddingServer:
    """A real ``/embeddings`` endpoint on localhost.

    ``script`` lists what the next requests get: a status (with headers) or
    ``"hang"`` (no answer until the test ends); ``failing`` answers every
    request with that status while set. Otherwise it answers the embeddings,
    in reverse order of ``index`` so that the client must sort them.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int | str, dict[str, str]]] = []
        self.failing: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "authorization": self.headers.get("Authorization"),
                        "at": time.monotonic(),
                    }
                )
                action, headers = server.script.pop(0) if server.script else (None, {})
                if action is None and server.failing is not None:
                    action = server.failing
                if action == "hang":
                    server.released.wait(10)
                    return
                if isinstance(action, int):
                    self._send(action, {"error": {"message": f"scripted {action}"}}, headers)
                    return
                data = [
                    {"object": "embedding", "index": i, "embedding": vector(text)}
                    for i, text in enumerate(body["input"])
                ]
                self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]})

            def _send(self, status: int, answer: object, headers: dict[str, str] = {}) -> None:  # noqa: B006
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the test server did not stop"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    started = EmbeddingServer()
    try:
        yield started
    finally:
        started.close()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def embedder(server: EmbeddingServer, **kwargs: Any) -> HttpEmbedder:
    options: dict[str, Any] = {"dimension": DIMENSION, "retry": QUICK, "timeout": 5.0}
    return HttpEmbedder("test-model", base_url=server.base_url, **{**options, **kwargs})


# --- the wire format --------------------------------------------------------


def test_embeddings_come_in_the_order_of_the_texts_batched_per_request(
    server: EmbeddingServer,
) -> None:
    texts = [f"text number {i}" for i in range(7)]
    vectors = embedder(server, batch_size=3).embed(texts)
    assert vectors == [vector(t) for t in texts]  # JSON keeps floats exact
    assert [r["body"]["input"] for r in server.requests] == [texts[0:3], texts[3:6], texts[6:]]
    assert {r["path"] for r in server.requests} == {"/v1/embeddings"}
    assert {r["body"]["model"] for r in server.requests} == {"test-model"}
    assert {r["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


def test_the_name_keys_the_collection_and_the_dimension_is_learned_when_not_given(
    server: EmbeddingServer,
) -> None:
    learning = HttpEmbedder("test-model", base_url=server.base_url)
    assert learning.name == "openai:test-model"
    assert not server.requests  # constructing it asks nothing
    assert learning.dimension == DIMENSION
    assert len(server.requests) == 1
    assert HttpEmbedder("text-embedding-3-small").dimension == 1536  # known, no call


def test_the_key_comes_from_the_named_variable_and_none_is_sent_without_one(
    server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_EMBED_KEY", "other-key")
    embedder(server, api_key_env="LOCAL_EMBED_KEY").embed(["a"])
    monkeypatch.delenv("OPENAI_API_KEY")
    embedder(server).embed(["b"])
    assert [r["authorization"] for r in server.requests] == ["Bearer other-key", None]


# --- failures ---------------------------------------------------------------


def test_a_429_is_retried_after_the_pause_its_retry_after_asks_for(
    server: EmbeddingServer,
) -> None:
    server.script = [(429, {"Retry-After": "1"})]
    assert embedder(server).embed(["hello"]) == [vector("hello")]
    first, second = server.requests
    # The policy alone would have retried after 0.02s at most.
    assert second["at"] - first["at"] >= 0.9


def test_a_retry_after_beyond_the_retry_deadline_gives_up_at_once(
    server: EmbeddingServer,
) -> None:
    server.script = [(429, {"Retry-After": "3600"})]
    with pytest.raises(IndexUnavailable, match="status 429"):
        embedder(server).embed(["hello"])
    assert len(server.requests) == 1


def test_a_persistent_500_gives_up_with_one_line_naming_the_url_and_the_status(
    server: EmbeddingServer,
) -> None:
    server.failing = 500
    with pytest.raises(IndexUnavailable) as raised:
        embedder(server).embed(["hello"])
    message = str(raised.value)
    assert f"{server.base_url}/embeddings" in message and "status 500" in message
    assert "scripted 500" in message  # the server's own reason
    assert "\n" not in message and KEY not in message
    assert len(server.requests) == QUICK.max_attempts


def test_a_401_is_not_retried_and_points_at_the_key_variable(server: EmbeddingServer) -> None:
    server.failing = 401
    with pytest.raises(IndexUnavailable, match=r"status 401.*\$OPENAI_API_KEY") as raised:
        embedder(server).embed(["hello"])
    assert KEY not in str(raised.value)
    assert len(server.requests) == 1


def test_a_server_slower_than_the_timeout_is_retried_then_reported(
    server: EmbeddingServer,
) -> None:
    server.script = [("hang", {}), ("hang", {}), ("hang", {})]
    with pytest.raises(IndexUnavailable, match=r"gave no answer within 0\.2s") as raised:
        embedder(server, timeout=0.2).embed(["hello"])
    assert "gave up after 3 attempt(s)" in str(raised.value)
    assert len(server.requests) == 3


def test_a_server_that_is_down_is_reported_as_unreachable() -> None:
    port = closed_port()
    down = HttpEmbedder("m", base_url=f"http://127.0.0.1:{port}/v1", dimension=4, retry=QUICK)
    with pytest.raises(IndexUnavailable, match=rf"127\.0\.0\.1:{port}/v1/embeddings could not"):
        down.embed(["hello"])


def test_vectors_of_another_length_than_the_dimension_given_are_refused(
    server: EmbeddingServer,
) -> None:
    with pytest.raises(ConfigurationError, match=r"vectors of 8 numbers.*dimension=8"):
        embedder(server, dimension=16).embed(["hello"])


# --- in the pipeline --------------------------------------------------------


def test_writes_succeed_while_the_embedder_fails_and_are_indexed_once_it_recovers(
    server: EmbeddingServer, db_path: str
) -> None:
    server.failing = 503
    texts = ["the flight leaves at seven", "pack the blue suitcase", "call the hotel"]
    with Pipeline.open(
        db_path, index=":memory:", embedder=embedder(server), index_sync=True
    ) as pipeline:
        ids = [
            pipeline.persist(Add(conversation_id="c", role="user", content=t)).message.id
            for t in texts
        ]
        assert [m.content for m in pipeline.messages("c")] == texts
        status = pipeline.index_status()
        assert status.pending == 3 and status.failing >= 1
        assert status.last_error is not None and "status 503" in status.last_error
        assert server.base_url in status.last_error
        server.failing = None
        assert pipeline.flush_index(timeout=30).pending == 0
        for message_id, text in zip(ids, texts, strict=True):
            hits = pipeline.search(text, limit=1)
            assert [h.message.id for h in hits] == [message_id]


def test_pipeline_open_takes_the_embedder_by_name(
    server: EmbeddingServer, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANCHORLINE_EMBEDDER_URL", server.base_url)
    with Pipeline.open(
        db_path, index=":memory:", embedder="openai:test-model", index_sync=True
    ) as pipeline:
        added = pipeline.persist(Add(conversation_id="c", role="user", content="hello there"))
        assert pipeline.search("hello there", limit=1)[0].message.id == added.message.id
    assert {r["body"]["model"] for r in server.requests} == {"test-model"}


def test_anchorline_embedder_names_the_default_embedder(
    server: EmbeddingServer, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANCHORLINE_EMBEDDER", "openai:from-env")
    monkeypatch.setenv("ANCHORLINE_EMBEDDER_URL", server.base_url)
    with Pipeline.open(db_path, index=":memory:", index_sync=True) as pipeline:
        pipeline.persist(Add(conversation_id="c", role="user", content="hello there"))
        assert pipeline.index_status().pending == 0
    assert {r["body"]["model"] for r in server.requests} == {"from-env"}


def test_an_unknown_embedder_is_a_configuration_error_listing_the_forms(db_path: str) -> None:
    with pytest.raises(ConfigurationError, match=r"'word2vec'.*'hashing'.*'openai:<model>'"):
        Pipeline.open(db_path, index=":memory:", embedder="word2vec")


# --- the command line -------------------------------------------------------


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ANCHORLINE_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}
    for name in ("ANCHORLINE_DB", "ANCHORLINE_INDEX", "ANCHORLINE_EMBEDDER"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "anchorline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**environment, **env},
        timeout=120,
    )


def test_the_cli_indexes_and_searches_with_the_embedder_it_is_given(
    server: EmbeddingServer, tmp_path: Path
) -> None:
    ops = json.dumps({"kind": "add", "conversation_id": "c", "role": "user", "content": "hi"})
    (tmp_path / "ops.jsonl").write_text(ops + "\n")
    url = {"ANCHORLINE_EMBEDDER_URL": server.base_url}
    ingested = run(tmp_path, "--embedder", "openai:cli-model", "ingest", "ops.jsonl", **url)
    assert ingested.returncode == 0, ingested.stderr
    found = run(tmp_path, "search", "hi", ANCHORLINE_EMBEDDER="openai:cli-model", **url)
    assert found.returncode == 0, found.stderr
    assert "1.000 c user" in found.stdout  # the same vector as the message's
    assert {r["body"]["model"] for r in server.requests} == {"cli-model"}
    assert {r["authorization"] for r in server.requests} == {f"Bearer {KEY}"}


def test_the_cli_refuses_an_unknown_embedder_before_creating_anything(tmp_path: Path) -> None:
    result = run(tmp_path, "--embedder", "openai:", "demo")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "anchorline: error: embedder: unknown embedder 'openai:';"
        " use 'hashing' (the default), 'openai:<model>' or 'local:<model folder or package>'"
    )
    assert not list(tmp_path.iterdir())
    from_env = run(tmp_path, "demo", ANCHORLINE_EMBEDDER="bert")
    assert from_env.returncode == 1 and "unknown embedder 'bert'" in from_env.stderr
    assert not list(tmp_path.iterdir())


def test_opening_an_index_while_a_model_of_unknown_dimension_is_down_says_why(
    db_path: str,
) -> None:
    port = closed_port()
    down = HttpEmbedder("m", base_url=f"http://127.0.0.1:{port}/v1", retry=QUICK)
    with pytest.raises(IndexUnavailable, match=rf"127\.0\.0\.1:{port}/v1/embeddings could not"):
        Pipeline.open(db_path, index=":memory:", embedder=down)
    with Pipeline.open(db_path) as pipeline:  # no index: the embedder is not asked
        pipeline.persist(Add(conversation_id="c", role="user", content="kept"))
