"""Opening a store by its location, and what a store offers beyond the terminal's reads."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator

import attrs
import pytest

from anchorline import Add, ConfigurationError, Conflict, Pipeline, Reserve
from anchorline.memory.interface import Store
from anchorline.memory.sqlite.store import SQLiteStore
from anchorline.memory.stores import open_store
from anchorline.results import Message

URL = "postgresql://writer:s3cret@db.example:5432/agents"


@pytest.fixture
def no_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the PostgreSQL store (or its driver) were not installed."""
    monkeypatch.setitem(sys.modules, "anchorline.memory.postgres", None)


@pytest.mark.parametrize("url", [URL, "postgres://db.example/agents", "PostgreSQL://h/d"])
@pytest.mark.usefixtures("no_postgres")
def test_a_postgres_url_without_its_store_says_what_to_install(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Pipeline.open(url, load_entrypoints=False)
    message = str(info.value)
    assert "pip install 'anchorline[postgres]'" in message
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.usefixtures("no_postgres")
def test_the_command_line_says_what_to_install_for_a_postgres_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from anchorline.cli import main

    assert main(["--db", URL, "--index", "none", "show", "c"]) != 0
    err = capsys.readouterr().err
    assert "anchorline[postgres]" in err and "s3cret" not in err


def test_a_vfs_is_refused_for_a_postgres_url() -> None:
    with pytest.raises(ConfigurationError, match="vfs"):
        open_store(URL, vfs="unix-none")


def test_any_other_location_is_a_sqlite_file(db_path: str) -> None:
    store = open_store(db_path, durability="full")
    try:
        assert isinstance(store, SQLiteStore) and store.location == db_path
    finally:
        store.close()


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = open_store(db_path)
    try:
        yield opened
    finally:
        opened.close()


def add(store: Store, message_id: str, content: str = "hi", **fields: object) -> Message:
    op = Add(conversation_id="c", role="user", content=content, message_id=message_id, **fields)
    tx = store.begin()
    added = tx.add(op, message_id=message_id, now=1_000)
    tx.commit()
    return added.message


def test_a_transaction_commits_its_writes_together_or_rolls_them_back(store: Store) -> None:
    tx = store.begin()
    tx.add(Add(conversation_id="c", role="user", content="a"), message_id="m1", now=1)
    tx.reserve(Reserve(conversation_id="c", role="assistant"), message_id="m2", now=2)
    tx.rollback()
    assert store.get_messages(["m1", "m2"]) == []
    tx = store.begin()
    tx.add(Add(conversation_id="c", role="user", content="a"), message_id="m1", now=1)
    tx.reserve(Reserve(conversation_id="c", role="assistant"), message_id="m2", now=2)
    tx.commit()
    assert sorted(m.id for m in store.get_messages(["m2", "gone", "m1"])) == ["m1", "m2"]


def test_restore_writes_a_message_exactly_as_given_once(store: Store, db_path: str) -> None:
    original = add(store, "m1", "kept", metadata={"k": 1}, client_message_id="turn-1")
    copy = open_store(db_path.replace(".db", "-copy.db"))
    try:
        tx = copy.begin()
        assert tx.restore(original) is True
        assert tx.restore(attrs.evolve(original, content="other")) is False  # not newer
        tx.commit()
        assert copy.get_message("m1") == original
        newer = attrs.evolve(original, content="edited", updated_at=original.updated_at + 1)
        tx = copy.begin()
        assert tx.restore(newer) is True  # a newer copy of the same message wins
        tx.commit()
        assert copy.get_message("m1") == newer
        tx = copy.begin()
        with pytest.raises(Conflict, match="client_message_id"):
            tx.restore(attrs.evolve(original, id="m2"))
        tx.commit()
        assert copy.get_message("m2") is None
    finally:
        copy.close()


def test_scan_walks_every_message_in_id_order_placeholders_included(store: Store) -> None:
    for message_id in ("m3", "m1", "m2"):
        add(store, message_id)
    tx = store.begin()
    tx.reserve(Reserve(conversation_id="c", role="assistant"), message_id="m0", now=5)
    tx.commit()
    assert [m.id for m in store.scan(None, 2)] == ["m0", "m1"]
    assert [m.id for m in store.scan("m1", 10)] == ["m2", "m3"]
    assert store.scan("m3", 10) == []


def test_complete_messages_streams_them_all_past_a_page(store: Store) -> None:
    tx = store.begin()
    for i in range(2_345):
        tx.add(
            Add(conversation_id="c", role="user", content=f"n{i}"), message_id=f"m{i:05}", now=i + 1
        )
    tx.reserve(Reserve(conversation_id="c", role="assistant"), message_id="p", now=9_999)
    tx.commit()
    ids = [m.id for m in store.complete_messages()]
    assert ids == [f"m{i:05}" for i in range(2_345)]


def test_an_outbox_wait_returns_when_woken(store: Store) -> None:
    outbox = store.outbox
    outbox.wake()
    assert outbox.wait(30) is True  # a wake before the wait is not lost
    assert outbox.wait(0.01) is False
    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(outbox.wait(60)), daemon=True)
    waiter.start()
    outbox.wake()
    waiter.join(10)
    assert not waiter.is_alive(), "wake() did not end the wait"
    assert woken == [True]


@pytest.mark.parametrize(
    "url", ["sqlite:///tmp/x.db", "mysql://db/chat", "postgresql+psycopg://u@db/chat"]
)
def test_a_url_no_store_knows_is_refused_not_taken_for_a_path(
    url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(str(tmp_path))
    scheme = url.partition("://")[0]
    with pytest.raises(ConfigurationError, match=rf"location: {re.escape(scheme)}:// names no"):
        Pipeline.open(url, load_entrypoints=False)
    assert list(os.listdir(str(tmp_path))) == []  # no folder named after the scheme
