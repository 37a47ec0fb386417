"""The project's console script as a real process: started with a clean environment, its
output drained continuously (a full pipe would block the server), and its health awaited."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
from mcp_auth.config import ProjectInfo

INHERITED_PREFIXES = ("MCP_", "CF_ACCESS_", "INFISICAL_")
"""Variables of the developer's shell that would change what the process does: never inherited."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script(project: ProjectInfo) -> list[str]:
    """The command that runs the project's console script: the installed script next to this
    Python (or on PATH), else ``python -m <package>``."""
    script = Path(sys.executable).parent / project.slug
    if script.exists():
        return [str(script)]
    found = shutil.which(project.slug)
    if found:
        return [found]
    if not project.package:
        raise RuntimeError(f"no {project.slug} console script and no package name to run with python -m")
    return [sys.executable, "-m", project.package]


def clean_environ(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without mcp_auth's variables, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES) and k != "DATABASE_URL"}
    return {**clean, **env}


def run_console_script(
    project: ProjectInfo, *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run one command to completion (its output captured)."""
    return subprocess.run(
        [*console_script(project), *args],
        env=clean_environ(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DrainedProcess:
    """A child process whose stdout and stderr (merged) a thread reads line by line as they come.

    Tests read ``lines``/``output`` (what was written so far) or wait for a line with
    ``wait_for``, while the process keeps running; ``stop`` ends it and returns everything.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.command = list(command)
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.command,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, name=f"drain-{self.process.pid}", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        with stream:
            for line in stream:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()  # EOF: wake waiters so they see the end

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def lines(self) -> list[str]:
        """The lines written so far (without line endings)."""
        with self._changed:
            return [line.rstrip("\r\n") for line in self._lines]

    @property
    def output(self) -> str:
        """Everything written so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0) -> list[str]:
        """Block until ``predicate(lines)`` holds (returns the lines); AssertionError on timeout
        or when the process ends first without it holding."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                lines = [line.rstrip("\r\n") for line in self._lines]
                if predicate(lines):
                    return lines
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{self.command[0]} never wrote the expected output:\n{''.join(self._lines)}")
                self._changed.wait(min(remaining, 0.5))

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself and for its output to be read to the end."""
        returncode = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return returncode

    def stop(self, timeout: float = 10.0) -> str:
        """Terminate (then kill if needed); returns all the output."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return self.output

    def __enter__(self) -> DrainedProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def start_console_script(project: ProjectInfo, *args: str, env: Mapping[str, str]) -> DrainedProcess:
    """Start ``<console script> *args`` with a clean environment plus ``env``; output drained."""
    return DrainedProcess([*console_script(project), *args], clean_environ(env))


def until_healthy(url: str, exit_code: Callable[[], int | None], timeout: float) -> str | None:
    """Poll ``{url}/health`` until it answers 200: None then, else why not (the process exited,
    or the time ran out). ``exit_code`` is the process's ``poll``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (code := exit_code()) is not None:
            return f"server exited {code}"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return f"server did not become healthy within {timeout:g}s"


def wait_healthy(url: str, process: DrainedProcess, timeout: float = 20.0) -> None:
    """Poll ``{url}/health`` until it answers 200; AssertionError when the process exits first."""
    problem = until_healthy(url, lambda: process.returncode, timeout)
    if problem is not None:
        if process.returncode is not None:
            process.wait(timeout=5)
        raise AssertionError(f"{problem}: {process.output}")


def stop_all(*processes: DrainedProcess, timeout: float = 10.0) -> None:
    """Stop several processes at once: all are sent SIGTERM before any is waited for, so their
    graceful shutdowns overlap instead of adding up."""
    for process in processes:
        if process.returncode is None:
            process.process.terminate()
    for process in processes:
        process.stop(timeout=timeout)
