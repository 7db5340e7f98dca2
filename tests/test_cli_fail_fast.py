"""What waiting cannot mend is said at once, in one line; what may pass is retried.

A refused connection, a host name that does not resolve, a port out of range and a
bad setting fail the command on their first attempt (today's retries waited a minute
on each). A read-only folder under the database is named as such.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import ConfigurationError, IndexUnavailable, StorageUnavailable
from anchorline.memory.index.embedders.http import HttpEmbedder
from anchorline.memory.retry import RetryPolicy

from .test_cli import line, run

REFUSED = "127.0.0.1:1"  # nothing listens on port 1
UNRESOLVED = "nohost.invalid"  # .invalid never resolves (RFC 2606)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("anchorline: error: ")
    return result.stderr


@pytest.fixture
def database(tmp_path: Path) -> Path:
    added = line("add", conversation_id="c1", role="user", content="lisbon")
    assert run(tmp_path, "--index", "none", "ingest", "-", stdin=added).returncode == 0
    return tmp_path


def test_a_qdrant_server_that_refuses_fails_demo_and_search_at_once(database: Path) -> None:
    for command in (("demo",), ("search", "lisbon")):
        said = one_line_error(run(database, "--index", f"http://{REFUSED}", *command))
        assert f"{command[0]}: could not reach the Qdrant server at http://{REFUSED}" in said
        assert "Connection refused" in said and "still waiting" not in said
    said = one_line_error(run(database, "--index", f"http://{UNRESOLVED}:6333", "search", "x"))
    assert f"could not reach the Qdrant server at http://{UNRESOLVED}:6333" in said


def test_a_write_does_not_wait_on_a_refusing_index_server_and_keeps_its_work(
    database: Path,
) -> None:
    added = line("add", conversation_id="c2", role="user", content="porto")
    written = run(database, "--index", f"http://{REFUSED}", "ingest", "-", stdin=added)
    assert written.returncode == 0, written.stderr  # the outbox keeps it for later
    assert "porto" in run(database, "show", "c2").stdout


def test_an_embedding_server_that_refuses_or_does_not_resolve_fails_at_once(
    database: Path,
) -> None:
    for url, problem in ((f"http://{REFUSED}/v1", "Connection refused"),
                         (f"https://{UNRESOLVED}/v1", "Errno -")):  # fmt: skip
        environment = {"ANCHORLINE_EMBEDDER_URL": url}
        said = one_line_error(
            run(
                database,
                "--embedder",
                "openai:text-embedding-3-small",
                "--index",
                "idx",
                "demo",
                env=environment,
            )
        )
        assert f"--embedder: the embedding server at {url} cannot be reached" in said
        assert problem in said
        assert "still waiting" not in said


def test_the_http_embedder_does_not_retry_a_refused_connection_or_an_unknown_host() -> None:
    patient = RetryPolicy(max_attempts=50, initial_backoff=0.2, max_backoff=0.2, deadline=60)
    for url, hint in ((f"http://{REFUSED}/v1", "check that the server runs there"),
                      (f"http://{UNRESOLVED}/v1", "check the URL's host name")):  # fmt: skip
        embedder = HttpEmbedder("m", base_url=url, dimension=3, retry=patient)
        with pytest.raises(IndexUnavailable, match="not retried") as raised:
            embedder.embed(["x"])
        assert hint in str(raised.value) and "gave up after" not in str(raised.value)
        embedder.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://x@127.0.0.1:99999/db", 'invalid port number: "99999"'),
        (f"postgresql://x@{UNRESOLVED}/db", f"failed to resolve host '{UNRESOLVED}'"),
    ],
    ids=["port out of range", "unknown host"],
)
def test_a_postgresql_url_that_cannot_work_is_not_retried_as_an_outage(
    tmp_path: Path, url: str, problem: str
) -> None:
    for command in (("demo",), ("show", "c1")):
        said = one_line_error(run(tmp_path, "--db", url, *command))
        assert problem in said and "check the URL's host, port and parameters" in said
        assert "attempt" not in said and "unavailable" not in said
    from anchorline.memory.postgres import PostgresStore

    patient = RetryPolicy(max_attempts=50, deadline=60)
    with pytest.raises(StorageUnavailable, match="check the URL's host") as raised:
        PostgresStore(url, retry=patient)
    assert raised.value.attempts == 1


def test_a_postgresql_server_that_refuses_fails_a_command_on_the_first_attempt(
    tmp_path: Path,
) -> None:
    for command in (("demo",), ("ingest", "-"), ("show", "c1")):
        said = one_line_error(run(tmp_path, "--db", f"postgresql://x@{REFUSED}/db", *command,
                                  stdin=""))  # fmt: skip
        assert "Connection refused" in said and "attempt" not in said


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_pool_max_is_named_before_connecting(tmp_path: Path, value: str) -> None:
    # The server refuses: the setting is what is said, so it is checked first.
    said = one_line_error(run(tmp_path, "--db", f"postgresql://x@{REFUSED}/db", "show", "c1",
                              env={"ANCHORLINE_POOL_MAX": value}))  # fmt: skip
    expected = (
        f"ANCHORLINE_POOL_MAX: must be a whole number of connections, 1 or more, got {value!r}"
    )
    assert expected in said and "refused" not in said
    from anchorline.memory.postgres import PostgresStore

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANCHORLINE_POOL_MAX", value)
        with pytest.raises(ConfigurationError, match="ANCHORLINE_POOL_MAX"):
            PostgresStore(f"postgresql://x@{REFUSED}/db")


@pytest.fixture
def read_only_database(tmp_path: Path) -> Iterator[Path]:
    """A database, with its index, in a folder on a file system mounted read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(folder)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a file system here: {mounted.stderr.decode().strip()}")
    try:
        added = line("add", conversation_id="c1", role="user", content="lisbon")
        assert run(folder, "ingest", "-", stdin=added).returncode == 0
        assert run(folder, "reindex").returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize(
    "command",
    [("show", "c1"), ("changes",), ("doctor",), ("search", "lisbon"), ("index", "optimize")],
    ids=" ".join,
)
def test_a_database_in_a_read_only_folder_says_the_folder_is_read_only(
    read_only_database: Path, command: tuple[str, ...]
) -> None:
    said = one_line_error(run(read_only_database, *command))
    assert f"folder {read_only_database} is read-only" in said or (
        f"read-only folder ({read_only_database})" in said
    )
    assert "make the folder writable" in said
    assert "unable to open database file" not in said and "Errno" not in said
