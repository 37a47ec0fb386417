"""HTTP benchmark: ``tools/call`` through the project's server, against bare FastMCP in the same run.

Part of ``benchmarks/run.py`` (which prints the machine header and the vault tables too); the
functions here start the servers, drive them and print two tables:

- latency of ``tools/call`` of ``whoami`` (no upstream token) and ``upstream_get`` (resolves the
  upstream token, audits it, GETs a loopback fake upstream), sequential plain JSON-RPC POSTs on one
  keep-alive connection per server, for each authentication method and each token store; the
  floor is ``bare_fastmcp.py`` (same tools and transport configuration, no mcp_auth);
- server RSS after a warm-up and its growth over N more calls (8 concurrent callers).

Servers are real processes (the project's ``serve`` console script; ``bare_fastmcp.py``), started
together, measured in interleaved rounds (drift on a shared machine hits floor and variants
alike), and stopped at the end. ``in_process=True`` serves them from threads of this process
instead (uvicorn on loopback): seconds instead of a minute, for the quick mode the test suite
runs; its numbers, and RSS, mean nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
from mcp_auth.config import McpAuthSettings, ProjectInfo, load_settings
from mcp_auth.crypto import generate_key
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.infisical import FakeInfisical
from mcp_auth.testing.loopback import LoopbackServer
from mcp_auth.testing.oidc import DEFAULT_AUDIENCE, FakeAuthorizationServer
from mcp_auth.testing.processes import clean_environ, console_script, free_port, until_healthy
from starlette.applications import Starlette

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BARE_SCRIPT = BENCH_DIR / "bare_fastmcp.py"

TOOLS: dict[str, dict[str, Any]] = {"whoami": {}, "upstream_get": {"path": "/whoami"}}
"""The tools called, with their arguments: one without the upstream token, one with it."""
FLOOR = "bare FastMCP (floor)"
CALLER_EMAIL = "bench@example.com"
START_TIMEOUT = 180.0
"""Seconds for every server to answer /health (they start together, on however few cores)."""
DROPPED_PREFIXES = ("OTEL_",)
DROPPED_NAMES = ("PROMETHEUS_MULTIPROC_DIR", "UPSTREAM_BASE_URL", "BENCH_UPSTREAM_TOKEN")
"""Besides what ``clean_environ`` drops: variables of this shell that would change a server."""

AppFactory = Callable[[McpAuthSettings], Starlette]


# ----- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int = 20
    """Latency: the servers take turns this many times (interleaved, so drift hits all alike)."""
    calls: int = 100
    """Latency: sequential calls per tool per server per round."""
    warmup: int = 200
    """Checked calls per tool per server before any timing."""
    memory_warmup: int = 1_000
    """Concurrent calls before the first RSS reading."""
    memory_calls: int = 10_000
    """Concurrent calls between the two RSS readings."""
    callers: int = 8
    """Concurrent callers (threads, a keep-alive connection each) for the RSS phase."""
    growth_limit_mib: float = 1.0
    """'No growth': RSS after ``memory_calls`` within this of RSS after the warm-up."""
    in_process: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str]
    """The server's environment (beyond host and port)."""
    headers: dict[str, str]
    """The caller's credential."""
    latency_targets: dict[str, float] = field(default_factory=dict)
    """tool -> the largest acceptable median, as a multiple of the floor's."""
    rss_target: float | None = None
    """The largest acceptable RSS after warm-up, as a multiple of the floor's; with it, growth is checked."""
    bare: bool = False


@dataclass(frozen=True)
class Stats:
    median: float
    p90: float
    p99: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        ordered = sorted(samples)
        return cls(quantile(ordered, 0.5), quantile(ordered, 0.9), quantile(ordered, 0.99), len(ordered))


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank of sorted samples (the way bench_vault.py reads its percentiles)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def progress(message: str) -> None:
    """What the run is doing, on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- the project, its fakes and its servers ----------------------------------------------------


def _load(spec: str) -> object:
    module_name, _, attribute = spec.partition(":")
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def load_project(root: Path = ROOT) -> tuple[ProjectInfo, AppFactory]:
    """The project's ProjectInfo and app factory, named in pyproject.toml for the test plugin."""
    options = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    project = _load(options["mcp_auth_project"])
    factory = _load(options["mcp_auth_app_factory"])
    if not isinstance(project, ProjectInfo) or not callable(factory):
        raise RuntimeError("pyproject.toml: mcp_auth_project / mcp_auth_app_factory do not name the project")
    return project, cast(AppFactory, factory)


@dataclass
class Fakes:
    """The loopback services the servers talk to, started for the run."""

    upstream_token: str
    upstream: LoopbackServer
    cloudflare: FakeCloudflareAccess
    oidc: FakeAuthorizationServer
    infisical: FakeInfisical


@contextmanager
def started_fakes(project: ProjectInfo) -> Iterator[Fakes]:
    token = "bench-upstream-" + secrets.token_hex(16)
    expected = f"Bearer {token}"

    def upstream(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != expected:
            return 401, {"error": "unauthorized"}
        return 200, {"name": "bench", "path": path}

    with ExitStack() as stack:
        fakes = Fakes(
            token, LoopbackServer(upstream), FakeCloudflareAccess(), FakeAuthorizationServer(), FakeInfisical()
        )
        for fake in (fakes.upstream, fakes.cloudflare, fakes.oidc, fakes.infisical):
            fake.start()
            stack.callback(fake.stop)
        fakes.infisical.set_secret(project.service_token_env, token)
        yield fakes


def build_variants(project: ProjectInfo, fakes: Fakes, database_url: str) -> list[Variant]:
    """Each authentication method and each token store; the database ones write their rows first."""
    bearer = "bench-bearer-" + secrets.token_hex(16)
    static = {"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": f"bench={bearer}"}
    env_store = {"MCP_TOKEN_STORE": "env", project.service_token_env: fakes.upstream_token}
    database = {"DATABASE_URL": database_url, "MCP_AUDIT_KEY": generate_key()}
    postgres = {**static, **database, "MCP_TOKEN_STORE": "postgres", "MCP_AUTH_ENCRYPTION_KEY": generate_key()}
    infisical = fakes.infisical
    api_key = asyncio.run(_prepare_database(project, postgres, fakes.upstream_token))
    oidc = {"MCP_AUTH_MODE": "bearer", "MCP_OIDC_ISSUER": fakes.oidc.issuer, "MCP_OIDC_AUDIENCE": DEFAULT_AUDIENCE}
    oauth_token = fakes.oidc.mint(audience=DEFAULT_AUDIENCE, scope="upstream:read", expires_in=24 * 3600)
    return [
        Variant(FLOOR, {}, {}, bare=True),
        Variant(
            "bearer + env store",
            {**static, **env_store},
            {"Authorization": f"Bearer {bearer}"},
            latency_targets={"whoami": 1.10, "upstream_get": 1.10},
            rss_target=1.2,
        ),
        Variant(
            "bearer + postgres store",
            postgres,
            {"Authorization": f"Bearer {bearer}"},
            latency_targets={"upstream_get": 1.30},
        ),
        Variant(
            "bearer + infisical store",
            {**static, **infisical.env()},
            {"Authorization": f"Bearer {bearer}"},
        ),
        Variant(
            "cloudflare jwt + env store",
            {"MCP_AUTH_MODE": "cloudflare", **fakes.cloudflare.env(), **env_store},
            {"Cf-Access-Jwt-Assertion": fakes.cloudflare.mint(expires_in=24 * 3600)},
        ),
        Variant("oauth jwt + env store", {**oidc, **env_store}, {"Authorization": f"Bearer {oauth_token}"}),
        Variant(
            "api key + env store, db audit",
            {"MCP_AUTH_MODE": "bearer", **database, **env_store},
            {"Authorization": f"Bearer {api_key}"},
        ),
    ]


async def _prepare_database(project: ProjectInfo, postgres_env: dict[str, str], upstream_token: str) -> str:
    """Store the upstream token (encrypted, as the postgres-store server reads it); returns a new API key."""
    from mcp_auth.db import Database
    from mcp_auth.db.keys import ApiKeyStore
    from mcp_auth.stores.base import DEFAULT_KEY
    from mcp_auth.stores.database import DatabaseTokenStore

    settings = load_settings(project, environ=postgres_env)
    database = Database.from_url(postgres_env["DATABASE_URL"], slug=project.slug)
    try:
        store = DatabaseTokenStore.from_settings(settings, database, actor=CALLER_EMAIL)
        await store.set(project.service_name, DEFAULT_KEY, upstream_token)
        return (await ApiKeyStore(database).create(CALLER_EMAIL)).key
    finally:
        database.close()


class Server(Protocol):
    url: str

    def wait_ready(self) -> None: ...

    def rss_mib(self) -> float | None: ...

    def begin_stop(self) -> None: ...

    def stop(self) -> None: ...


def vm_rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux; psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ProcessServer:
    """A server in a process of its own: the project's ``serve`` (as the container runs it), or
    ``bare_fastmcp.py``. Its output goes to a temporary file, not a pipe: no thread of this
    process reads log lines while it measures."""

    def __init__(self, variant: Variant, project: ProjectInfo, upstream_url: str, upstream_token: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        if variant.bare:
            command = [sys.executable, str(BARE_SCRIPT), "--port", str(port), "--upstream", upstream_url]
            env = _server_environ({"BENCH_UPSTREAM_TOKEN": upstream_token})
        else:
            command = [*console_script(project), "serve"]
            server_env = {
                **variant.env,
                "MCP_HOST": "127.0.0.1",
                "MCP_PORT": str(port),
                "UPSTREAM_BASE_URL": upstream_url,
            }
            env = _server_environ(server_env, project)
        self.name = variant.name
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        problem = until_healthy(self.url, self.process.poll, START_TIMEOUT)
        if problem is not None:
            self.stop()
            raise BenchError(f"{self.name}: {problem}: {self._output()}")

    def _output(self) -> str:
        """The end of what it wrote (read once it has exited: it shares the file's offset)."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def rss_mib(self) -> float | None:
        return vm_rss_mib(self.process.pid)

    def begin_stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.begin_stop()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def _server_environ(env: Mapping[str, str], project: ProjectInfo | None = None) -> dict[str, str]:
    dropped = {*DROPPED_NAMES, *([project.service_token_env] if project else [])}
    inherited = clean_environ({})
    kept = {k: v for k, v in inherited.items() if k not in dropped and not k.startswith(DROPPED_PREFIXES)}
    return {**kept, **env}


class ThreadServer:
    """A server in a thread of this process (uvicorn on loopback): fast to start, for the quick mode."""

    def __init__(self, variant: Variant, project: ProjectInfo, factory: AppFactory, fakes: Fakes) -> None:
        import uvicorn

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        if variant.bare:
            from bare_fastmcp import create_bare_app

            app = create_bare_app(fakes.upstream.url, fakes.upstream_token)
        else:
            settings = load_settings(project, environ=variant.env)
            settings.validate_startup()
            app = factory(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"bench-{port}", daemon=True)
        self.thread.start()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"in-process server {self.url} did not start")
            time.sleep(0.01)

    def rss_mib(self) -> float | None:
        return None  # one process for all: no server's own

    def begin_stop(self) -> None:
        self.server.should_exit = True

    def stop(self) -> None:
        self.begin_stop()
        self.thread.join(timeout=10)


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def started_servers(
    variants: Sequence[Variant], project: ProjectInfo, factory: AppFactory, fakes: Fakes, *, in_process: bool
) -> Iterator[list[Server]]:
    """Every variant's server, started together and ready; all stopped on exit."""
    with ExitStack() as stack:
        if in_process:  # the example tool reads its upstream from the environment
            stack.enter_context(_environ(UPSTREAM_BASE_URL=fakes.upstream.url))
        servers: list[Server] = []
        stack.callback(_stop_all, servers)
        progress(f"starting {len(variants)} servers ({'threads' if in_process else 'processes'})")
        for variant in variants:
            server: Server
            if in_process:
                server = ThreadServer(variant, project, factory, fakes)
            else:
                server = ProcessServer(variant, project, fakes.upstream.url, fakes.upstream_token)
            servers.append(server)
        for server in servers:
            server.wait_ready()
        yield servers


def _stop_all(servers: Sequence[Server]) -> None:
    """All told to stop first, then each waited for: they shut down together."""
    for server in servers:
        server.begin_stop()
    for server in servers:
        server.stop()


# ----- driving them -----------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


TLS = ssl.create_default_context()
"""Unused (the servers are plain HTTP on loopback), but every httpx client would otherwise load
the CA bundle for one of its own (~20 ms each; the RSS phase opens a client per caller)."""


class Caller:
    """One keep-alive connection to a server, posting pre-encoded ``tools/call`` requests."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.client = httpx.Client(base_url=url, headers={**MCP_HEADERS, **headers}, timeout=30.0, verify=TLS)
        self.bodies = {
            name: json.dumps(jsonrpc("tools/call", {"name": name, "arguments": arguments})).encode()
            for name, arguments in TOOLS.items()
        }

    def call(self, tool: str) -> None:
        response = self.client.post("/mcp", content=self.bodies[tool])
        if response.status_code != 200 or b'"isError":false' not in response.content:
            raise BenchError(f"{tool}: HTTP {response.status_code}: {response.text[:300]}")

    def check(self, tool: str) -> None:
        """One call, its answer read in full (warm-up): the tool ran and succeeded."""
        response = self.client.post("/mcp", content=self.bodies[tool])
        result = response.json().get("result") if response.status_code == 200 else None
        if not isinstance(result, dict) or result.get("isError") is not False:
            raise BenchError(f"{tool}: HTTP {response.status_code}: {response.text[:300]}")
        self.call(tool)

    def timed(self, tool: str, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            self.call(tool)
            samples.append(time.perf_counter() - started)
        return samples

    def close(self) -> None:
        self.client.close()


def measure_latency(
    variants: Sequence[Variant], servers: Sequence[Server], options: Options
) -> dict[tuple[str, str], list[float]]:
    """(variant name, tool) -> seconds per sequential call, over interleaved rounds."""
    callers = [Caller(server.url, variant.headers) for variant, server in zip(variants, servers, strict=True)]
    samples: dict[tuple[str, str], list[float]] = {(v.name, tool): [] for v in variants for tool in TOOLS}
    try:
        for caller in callers:
            for tool in TOOLS:
                for _ in range(options.warmup):
                    caller.check(tool)
        pairs = list(zip(variants, callers, strict=True))
        for round_ in range(options.rounds):
            progress(f"latency round {round_ + 1}/{options.rounds}")
            shift = round_ % len(pairs)  # a different server goes first each round
            for variant, caller in pairs[shift:] + pairs[:shift]:
                for tool in TOOLS:
                    samples[(variant.name, tool)].extend(caller.timed(tool, options.calls))
    finally:
        for caller in callers:
            caller.close()
    return samples


def drive(server: Server, headers: Mapping[str, str], calls: int, callers: int) -> None:
    """``calls`` calls (alternating the tools) from ``callers`` threads, a connection each."""
    names = list(TOOLS)

    def work(index: int) -> None:
        caller = Caller(server.url, headers)
        try:
            for n in range(index, calls, callers):
                caller.call(names[n % len(names)])
        finally:
            caller.close()

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(work, range(callers)))


def measure_memory(
    variants: Sequence[Variant], servers: Sequence[Server], options: Options
) -> dict[str, tuple[float | None, float | None]]:
    """variant name -> (RSS after the warm-up, RSS after ``memory_calls`` more), MiB."""
    found: dict[str, tuple[float | None, float | None]] = {}
    for variant, server in zip(variants, servers, strict=True):
        progress(f"RSS: {variant.name}, {options.memory_warmup + options.memory_calls:,} calls")
        drive(server, variant.headers, options.memory_warmup, options.callers)
        warm = server.rss_mib()
        drive(server, variant.headers, options.memory_calls, options.callers)
        found[variant.name] = (warm, server.rss_mib())
    return found


# ----- tables -----------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int]) -> None:
    """A plain-text table: the ``numeric`` columns right-aligned, the others left-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))


def verdict(ratio: float | None, target: float | None) -> tuple[str, str]:
    """(target column, met? column)."""
    if target is None:
        return "-", "-"
    if ratio is None:
        return f"<= {target:.2f}x", "n/a"
    return f"<= {target:.2f}x", "yes" if ratio <= target else "NO"


def latency_rows(variants: Sequence[Variant], samples: Mapping[tuple[str, str], list[float]]) -> list[list[str]]:
    rows = []
    for tool in TOOLS:
        floor = Stats.of(samples[(FLOOR, tool)])
        for variant in variants:
            stats = Stats.of(samples[(variant.name, tool)])
            ratio = stats.median / floor.median
            target, met = verdict(ratio, variant.latency_targets.get(tool))
            rows.append(
                [
                    variant.name,
                    tool,
                    f"{stats.median * 1000:.3f}",
                    f"{stats.p90 * 1000:.3f}",
                    f"{stats.p99 * 1000:.3f}",
                    f"{floor.median * 1000:.3f}",
                    f"{ratio:.2f}x",
                    target,
                    met,
                ]
            )
    return rows


def memory_rows(
    variants: Sequence[Variant], rss: Mapping[str, tuple[float | None, float | None]], options: Options
) -> list[list[str]]:
    floor_warm = rss[FLOOR][0]
    rows = []
    for variant in variants:
        warm, after = rss[variant.name]
        ratio = warm / floor_warm if warm is not None and floor_warm else None
        growth = after - warm if after is not None and warm is not None else None
        target, met = verdict(ratio, variant.rss_target)
        if variant.rss_target is not None:
            target += f", growth <= {options.growth_limit_mib:g} MiB"
            if growth is not None and met == "yes" and growth > options.growth_limit_mib:
                met = "NO"
        rows.append(
            [
                variant.name,
                _mib(warm),
                _mib(after),
                "n/a" if growth is None else f"{growth:+.1f}",
                _mib(floor_warm),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                target,
                met,
            ]
        )
    return rows


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run(options: Options, database_url: str) -> None:
    """Start the fakes and the servers, measure, print the two tables, stop everything."""
    project, factory = load_project()
    with started_fakes(project) as fakes:
        variants = build_variants(project, fakes, database_url)
        with started_servers(variants, project, factory, fakes, in_process=options.in_process) as servers:
            samples = measure_latency(variants, servers, options)
            count = options.rounds * options.calls
            where = "threads of this process (numbers not meaningful)" if options.in_process else "own processes"
            print(
                f"\nHTTP tools/call latency, ms: {count:,} sequential calls per row after {options.warmup} warm-up, "
                f"one keep-alive connection, plain JSON-RPC POSTs; {options.rounds} interleaved rounds; "
                f"servers in {where}"
            )
            headers = ["server", "tool", "median", "p90", "p99", "floor median", "ratio", "target", "met?"]
            print_table(headers, latency_rows(variants, samples), numeric=range(2, 7))
            rss = measure_memory(variants, servers, options)
        print(
            f"\nServer RSS, MiB: after {options.memory_warmup:,} warm-up calls, then after {options.memory_calls:,} "
            f"more ({options.callers} concurrent callers, the two tools alternating)"
            + ("; n/a: in-process servers have no RSS of their own" if options.in_process else "")
        )
        headers = ["server", "RSS warm", "RSS after", "growth", "floor RSS", "ratio", "target", "met?"]
        print_table(headers, memory_rows(variants, rss, options), numeric=range(1, 6))
