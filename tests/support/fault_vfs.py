"""An apsw VFS shim that injects transient I/O errors, busy errors and a full disk.

It sits on top of the default VFS and passes everything through, except that
``xWrite`` and ``xSync`` fail at ``rate`` (with ``SQLITE_IOERR`` or
``SQLITE_BUSY``, half and half) while the shim is armed, and that once
``space`` is set, a write that would grow the files by more than ``space``
bytes fails with ``SQLITE_FULL``. Only fault injection uses it: the database
underneath is real SQLite.
"""

from __future__ import annotations

import random
from typing import Any

import apsw


class FaultVFS(apsw.VFS):  # type: ignore[misc]
    def __init__(self, name: str = "faulty", rate: float = 0.0, seed: int = 0) -> None:
        self.name = name
        self.rate = rate
        self.random = random.Random(seed)
        self.injected = {"io": 0, "busy": 0, "full": 0}
        self.calls = 0
        #: Bytes the "disk" still takes; ``None`` for no limit.
        self.space: int | None = None
        #: How many of the next writes fail with ``SQLITE_BUSY``, whatever ``rate``.
        self.fail_next = 0
        super().__init__(name, "")

    def maybe_fail(self, where: str) -> None:
        self.calls += 1
        if self.fail_next and where == "write":
            self.fail_next -= 1
            self.injected["busy"] += 1
            raise apsw.BusyError(f"injected busy error in {where}")
        if self.rate and self.random.random() < self.rate:
            if self.random.random() < 0.5:
                self.injected["io"] += 1
                raise apsw.IOError(f"injected I/O error in {where}")
            self.injected["busy"] += 1
            raise apsw.BusyError(f"injected busy error in {where}")

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        return FaultFile(self, name, flags)


class FaultFile(apsw.VFSFile):  # type: ignore[misc]
    def __init__(self, vfs: FaultVFS, name: Any, flags: list[int]) -> None:
        self.vfs = vfs
        super().__init__("", name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        self.vfs.maybe_fail("write")
        if self.vfs.space is not None:
            growth = offset + len(data) - self.xFileSize()
            if growth > self.vfs.space:
                self.vfs.injected["full"] += 1
                raise apsw.FullError("injected: database or disk is full")
            self.vfs.space -= max(0, growth)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self.vfs.maybe_fail("sync")
        super().xSync(flags)
