"""The cold tier's storage: snapshots read back exactly as written or are refused, and
the object stores (a folder, memory, a real S3-protocol server) keep them whole."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from anchorline import ArchiveUnavailable, ConfigurationError, Message, SnapshotCorrupt
from anchorline.errors import SnapshotMissing
from anchorline.memory.archive import ObjectArchive, Snapshot, decode, encode, open_archive
from anchorline.memory.archive.snapshot import MAGIC
from anchorline.memory.interface import ConversationState
from anchorline.ops import encode_json


def _message(seq: int, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": f"m{seq}",
        "conversation_id": "trip/42",
        "role": "user",
        "content": f"message {seq}",
        "metadata": {},
        "status": "complete",
        "created_at": 1_700_000_000_000 + seq,
        "updated_at": 1_700_000_000_000 + seq,
        "seq": seq,
    }
    values.update(fields)
    return Message(**values)


def _snapshot(messages: list[Message], next_seq: int | None = None) -> Snapshot:
    last = messages[-1].seq if messages else 0
    state = ConversationState(
        id="trip/42", parent_id="root", next_seq=next_seq or last + 1,
        first_at=1_700_000_000_000, last_at=1_700_000_000_999,
    )  # fmt: skip
    return Snapshot(conversation=state, messages=tuple(messages), taken_at=1_800_000_000_000)


SAMPLE = _snapshot(
    [
        _message(1, content="Book me a flight to Lisbon ✈️ (ünïcode)"),
        _message(2, role="assistant", content=[{"type": "text", "text": "Friday?"},
                 {"type": "data", "order_id": 2**64 + 1}], metadata={"trace": -(2**70)}),
        _message(4, role="compaction", content="the gist", metadata={"first_kept_seq": 2}),
        _message(5, role="assistant", content=[], status="reserved", client_message_id="turn-3"),
    ],  # seq 3 was deleted: gaps stay
    next_seq=7,  # and a deleted seq 6 is never handed out again
)  # fmt: skip


def test_a_snapshot_reads_back_exactly_as_written() -> None:
    data = encode(SAMPLE)
    assert data.startswith(MAGIC)
    back = decode(data, "trip/42")
    assert back == SAMPLE
    assert back.messages[1].content[1]["order_id"] == 2**64 + 1  # exact, not a float
    assert back.messages[1].metadata["trace"] == -(2**70)
    assert encode(back) == data  # the same conversation, the same bytes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(),
    block=st.dictionaries(st.text(), json_values, max_size=4),
    metadata=st.dictionaries(st.text(), json_values, max_size=4),
)
def test_any_json_a_message_holds_reads_back_equal(
    text: str, block: dict[str, Any], metadata: dict[str, Any]
) -> None:
    snapshot = _snapshot(
        [
            _message(1, content=text),
            _message(2, content=[{**block, "type": "x"}], metadata=metadata),
        ]
    )
    assert decode(encode(snapshot), "trip/42") == snapshot


def test_a_conversation_compresses() -> None:
    messages = [_message(i, content=f"turn {i}: the flight to Lisbon leaves at 09:40 " * 8)
                for i in range(1, 1001)]  # fmt: skip
    data = encode(_snapshot(messages))
    raw = len(encode_json([m.content for m in messages]))
    assert len(data) * 5 < raw


def _with_body(body: bytes, digest: bytes | None = None) -> bytes:
    digest = digest or hashlib.sha256(body).hexdigest().encode()
    return MAGIC + b"sha256 " + digest + b"\n" + gzip.compress(body)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: d[: len(d) // 2], "cut short"),
        (lambda d: d[:-60] + bytes([d[-60] ^ 0x01]) + d[-59:], "damaged|decompress|checksum"),
        (lambda d: d.replace(b"sha256 ", b"sha256 0", 1)[:-1], "checksum"),
        (lambda d: b"PK\x03\x04" + d[4:], "not an Anchorline snapshot"),
        (lambda d: b"", "not an Anchorline snapshot"),
    ],
    ids=["truncated", "flipped-byte", "checksum-line", "other-file", "empty"],
)
def test_a_damaged_snapshot_is_refused(damage: Any, problem: str) -> None:
    with pytest.raises(SnapshotCorrupt, match=problem) as caught:
        decode(damage(encode(SAMPLE)), "trip/42")
    assert "trip/42" in str(caught.value)


def test_a_changed_body_with_a_matching_checksum_is_still_checked() -> None:
    body = encode(SAMPLE)
    document = gzip.decompress(body[body.index(b"\n", len(MAGIC)) + 1 :])
    swapped = document.replace(b'"reserved"', b'"deleted"')
    with pytest.raises(SnapshotCorrupt, match=r"messages\[3\]\.status"):
        decode(_with_body(swapped), "trip/42")
    reordered = document.replace(b'"the gist",{"first_kept_seq":2},"complete",null,'
                                 b'1700000000004,1700000000004,4',
                                 b'"the gist",{"first_kept_seq":2},"complete",null,'
                                 b'1700000000004,1700000000004,1')  # fmt: skip
    with pytest.raises(SnapshotCorrupt, match=r"messages\[2\]\.seq 1 is out of order"):
        decode(_with_body(reordered), "trip/42")
    with pytest.raises(SnapshotCorrupt, match="malformed"):
        decode(_with_body(b"[1, 2"), "trip/42")


def test_another_conversations_snapshot_is_refused() -> None:
    with pytest.raises(SnapshotCorrupt, match="it holds conversation 'trip/42'"):
        decode(encode(SAMPLE), "trip/43")


# --- the object stores -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's server mode) on loopback, with a bucket."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    httpx.put(f"{endpoint}/snapshots").raise_for_status()
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture(params=["folder", "memory", "s3"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectArchive:
    if request.param == "folder":
        return open_archive(str(tmp_path / "cold"))
    if request.param == "memory":
        return open_archive("memory://")
    request.getfixturevalue("s3_env")
    return open_archive(f"s3://snapshots/run-{time.monotonic_ns()}")


def test_an_archive_keeps_each_conversation_whole(archive: ObjectArchive) -> None:
    ids = ["trip/42", "trip_42", "Trip-42", "café ☕", "../../etc", "a" * 256]
    for i, conversation_id in enumerate(ids):
        archive.put(conversation_id, f"snapshot {i}".encode() * 100)
    for i, conversation_id in enumerate(ids):  # every id its own object, none overwritten
        assert archive.get(conversation_id) == f"snapshot {i}".encode() * 100
        assert archive.exists(conversation_id)
    archive.put("trip/42", encode(SAMPLE))  # a newer snapshot replaces the older
    assert decode(archive.get("trip/42"), "trip/42") == SAMPLE
    archive.delete("trip/42")
    archive.delete("trip/42")  # already gone: nothing to do
    assert not archive.exists("trip/42")
    with pytest.raises(SnapshotMissing, match="no snapshot of conversation 'trip/42'"):
        archive.get("trip/42")
    assert archive.get("trip_42") == b"snapshot 1" * 100


def test_a_folder_archive_stays_inside_its_folder(tmp_path: Path) -> None:
    archive = open_archive(str(tmp_path / "cold"))
    archive.put("../../escape", b"x")
    archive.put("/abs/path", b"y")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 2
    assert all(p.startswith("cold/conversations/~") for p in written)
    assert (tmp_path / "cold").stat().st_mode & 0o777 == 0o700


def test_a_server_that_is_down_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    archive = open_archive("s3://snapshots/down")
    started = time.monotonic()
    for call in (lambda: archive.put("c1", b"x"), lambda: archive.get("c1"),
                 lambda: archive.exists("c1"), lambda: archive.delete("c1")):  # fmt: skip
        with pytest.raises(ArchiveUnavailable, match=r"archive s3://snapshots/down: could not"):
            call()
    assert time.monotonic() - started < 20


def test_a_bucket_that_does_not_exist_is_unavailable(s3_env: str) -> None:
    archive = open_archive("s3://no-such-bucket/x")
    with pytest.raises(ArchiveUnavailable, match="'c1'") as caught:
        archive.put("c1", b"x")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("", "must be a folder or an object store URL"),
        ("http://example.com/x", "not a location the cold tier can use"),
        ("ftp://host/x", "not a location the cold tier can use"),
    ],
)
def test_a_location_that_cannot_hold_snapshots_is_refused(location: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^archive: .*{problem}"):
        open_archive(location)


def test_a_file_is_not_an_archive_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="is a file, not a folder"):
        open_archive(str(tmp_path / "file"))
