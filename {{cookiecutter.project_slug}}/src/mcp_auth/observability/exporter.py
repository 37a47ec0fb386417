"""``GET /metrics`` on its own port (MCP_METRICS_PORT), never on the MCP port.

A minimal HTTP/1.1 listener on the server's event loop, started and stopped with the app's
lifespan: it answers ``GET``/``HEAD /metrics`` with the Prometheus text (or OpenMetrics, by
``Accept``), 404 for any other path, 405 for any other method, and closes every connection.

Several worker processes: with ``PROMETHEUS_MULTIPROC_DIR`` set, every worker binds the port
with SO_REUSEPORT and answers with the sum over all processes' files in that directory, so any
worker the kernel hands a scrape to gives the same whole-server answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mcp_auth.errors import ConfigError
from mcp_auth.observability import metrics

if TYPE_CHECKING:  # imported when rendering: operator commands load this module but never render
    from prometheus_client import CollectorRegistry

logger = logging.getLogger("mcp_auth.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
MAX_HEAD = 8192
READ_TIMEOUT = 5.0


def multiprocess_dir(environ: dict[str, str] | None = None) -> Path | None:
    """PROMETHEUS_MULTIPROC_DIR, checked: ConfigError when it is set but not a writable directory."""
    value = (os.environ if environ is None else environ).get(MULTIPROC_ENV, "").strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise ConfigError(f"{MULTIPROC_ENV} must be an existing, writable directory (create and empty it before start)")
    return path


def clear_multiprocess_dir(path: Path) -> None:
    """Remove the previous run's files: call once before the workers start, never from a worker."""
    for file in path.glob("*.db"):
        file.unlink(missing_ok=True)


def render(accept: str, directory: Path | None) -> tuple[bytes, str]:
    """The exposition body and its content type; the sum over every process with ``directory``."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector

    if directory is None:
        registry: CollectorRegistry = REGISTRY
    else:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call,unused-ignore]
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class MetricsServer:
    def __init__(self, host: str, port: int, *, directory: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.directory = directory
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        metrics.initialize()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_port=self.directory is not None, limit=MAX_HEAD
        )
        logger.info("metrics listening", extra={"host": self.host, "port": self.port, "path": METRICS_PATH})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            await self._answer(head.decode("latin-1"), writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
            pass  # a client that sends no complete request head gets no answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, head: str, writer: asyncio.StreamWriter) -> None:
        request_line, *header_lines = head.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        accept = ""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        if target.partition("?")[0] != METRICS_PATH:
            status, body, content_type = "404 Not Found", b"not found\n", "text/plain; charset=utf-8"
        elif method not in ("GET", "HEAD"):
            status, body, content_type = "405 Method Not Allowed", b"method not allowed\n", "text/plain; charset=utf-8"
        else:
            status = "200 OK"
            body, content_type = await asyncio.to_thread(render, accept, self.directory)
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
