"""Where the index lives: a mistyped location is refused up front, and a new folder is private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchorline import Add, ConfigurationError, IndexUnavailable, Pipeline
from anchorline.cli import main


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        ("htp://localhost:6333", "scheme 'htp://'"),
        ("qdrant://localhost:6333", "scheme 'qdrant://'"),
        ("ftp://example.com/index", "scheme 'ftp://'"),
        ("localhost:6333", "host:port"),
        ("http:/localhost:6333", "looks like a URL"),
        ("http://", "names no host"),
        ("http://localhost:port", "not a valid URL"),
        ("", "is empty"),
        ("  ", "is empty"),
        (" local", "surrounding spaces"),
        ("index\nfolder", "control characters"),
    ],
)
def test_a_location_that_is_not_an_index_is_refused_before_anything_is_created(
    in_tmp: Path, index: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Pipeline.open("chat.db", index=index, load_entrypoints=False)
    message = str(raised.value)
    assert repr(index) in message and problem in message
    assert "http:// or https://" in message and "'local'" in message  # what is accepted
    assert "\n" not in message
    assert list(in_tmp.iterdir()) == []  # not even the database


def test_a_file_given_as_the_index_folder_is_refused(in_tmp: Path) -> None:
    (in_tmp / "notes.txt").write_text("not a folder")
    with pytest.raises(ConfigurationError, match=r"'notes\.txt' is a file, not a folder"):
        Pipeline.open("chat.db", index="notes.txt", load_entrypoints=False)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("index", ["local", ":memory:", "my-index", "./idx:2024", "sub/dir/idx"])
def test_every_documented_location_is_accepted(in_tmp: Path, index: str) -> None:
    with Pipeline.open("chat.db", index=index, index_sync=True, load_entrypoints=False) as p:
        p.persist(Add(conversation_id="c", role="user", content="the location works"))
        assert [h.message.content for h in p.search("location")] == ["the location works"]


@pytest.mark.parametrize("index", ["none", "None", "NONE"])
def test_none_means_no_index_as_on_the_command_line(in_tmp: Path, index: str) -> None:
    with Pipeline.open("chat.db", index=index, load_entrypoints=False) as pipeline:
        assert pipeline.settings.index is None
        with pytest.raises(IndexUnavailable, match="no vector index"):
            pipeline.search("anything")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["chat.db"]


def test_a_server_url_keeps_its_host_and_gets_a_lower_case_scheme(in_tmp: Path) -> None:
    with Pipeline.open("chat.db", index="HTTP://127.0.0.1:9/x", load_entrypoints=False) as p:
        assert p.settings.index == "http://127.0.0.1:9/x"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["chat.db"]  # no folder for a URL


def test_the_cli_refuses_a_mistyped_url_with_one_line_and_creates_nothing(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--index", "htp://localhost:6333", "search", "x"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("anchorline: error: index: 'htp://localhost:6333'")
    assert err.count("\n") == 1 and "unexpected" not in err
    assert list(in_tmp.iterdir()) == []  # no ./htp:/localhost:6333/ folder, no database


# --- privacy ----------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    """The permission bits of everything under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.lstat().st_mode)
        for path in folder.rglob("*")
    }


def test_a_new_index_folder_and_its_files_are_private_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    db = tmp_path / "chat.db"
    with Pipeline.open(str(db), index="local", index_sync=True, load_entrypoints=False) as p:
        p.persist(Add(conversation_id="c", role="user", content="my private note"))
        assert p.search("private note")
        folder = tmp_path / "chat.db.index"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        inside = modes(folder)
        assert "anchorline.lock" in inside and "anchorline-index.json" in inside
        assert "anchorline.sock" in inside  # where other processes ask: private too
        assert any(name.startswith("segments/") for name in inside)
        for name, mode in inside.items():
            assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
            if not (folder / name).is_dir():
                assert mode == 0o600, f"{name} is {oct(mode)}"
        p.indexer().reindex()  # a collection made again keeps to the same rule
        assert all(mode & 0o077 == 0 for mode in modes(folder).values())


def test_a_folder_the_user_created_keeps_its_mode_and_files_follow_it(
    tmp_path: Path, umask_022: None
) -> None:
    folder = tmp_path / "shared-index"
    folder.mkdir()
    folder.chmod(0o750)  # the user lets the group read the index
    script = folder / "backup.sh"  # and keeps something of their own there
    script.write_text("#!/bin/sh\n")
    script.chmod(0o775)
    with Pipeline.open(
        str(tmp_path / "chat.db"), index=str(folder), index_sync=True, load_entrypoints=False
    ) as p:
        p.persist(Add(conversation_id="c", role="user", content="shared with the group"))
        assert p.search("group")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
        files = {
            n: m for n, m in modes(folder).items() if not (folder / n).is_dir() and n != script.name
        }
        assert files and all(mode == 0o640 for mode in files.values()), files
        assert stat.S_IMODE(script.stat().st_mode) == 0o775  # not Qdrant's: left alone
