"""The server's Prometheus metrics and the bounded label values they take.

Every label has a small fixed set of values (or the registered tool names), so a caller cannot
grow the series count: unknown paths are ``other``, unknown tools ``other``, authentication
failures one of ``AUTH_FAILURE_REASONS``. No identity, token or key is ever a label.

With ``PROMETHEUS_MULTIPROC_DIR`` set before the process starts, prometheus-client keeps the
values in files there and the exporter sums every process's files (several workers).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

PATHS = frozenset({"/mcp", "/health", "/status"})
"""The request paths counted by name; every other path is ``other``."""
OTHER = "other"

AuthFailureReason = Literal[
    "missing",
    "invalid_jwt",
    "invalid_bearer",
    "invalid_api_key",
    "duplicate",
    "not_accepted",
    "unavailable",
    "rate_limited",
]
AUTH_FAILURE_REASONS: tuple[AuthFailureReason, ...] = get_args(AuthFailureReason)
ToolOutcome = Literal["success", "error", "not_found", "unavailable", "forbidden"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROTATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

HistogramName = Literal["http", "token_store", "audit_write", "key_rotation"]


@dataclass(frozen=True)
class Instruments:
    http_requests: Counter
    tool_calls: Counter
    auth_failures: Counter
    http: Histogram
    token_store: Histogram
    audit_write: Histogram
    key_rotation: Histogram


@functools.cache
def instruments() -> Instruments:
    """The metrics, registered on first use: prometheus-client takes ~50 ms to import, which
    operator commands that record nothing (keygen, tokens list, --help) should not pay."""
    from prometheus_client import Counter, Histogram

    return Instruments(
        http_requests=Counter(
            "mcp_http_requests",
            "HTTP requests answered, by method, path template (/mcp, /health, /status, other) and status code.",
            ["method", "path", "status"],
        ),
        tool_calls=Counter(
            "mcp_tool_calls",
            "tools/call requests by tool (registered names; unknown ones are 'other') and outcome: success, error "
            "(the tool failed), not_found, unavailable (503: no upstream token), forbidden (403: scope lacking).",
            ["tool", "outcome"],
        ),
        auth_failures=Counter(
            "mcp_auth_failures",
            "Requests refused by authentication (401), could not be authenticated (503: 'unavailable') or "
            "over a rate limit (429: 'rate_limited'), by reason.",
            ["reason"],
        ),
        http=Histogram(
            "mcp_http_request_duration_seconds",
            "Time to answer an HTTP request (the whole response), by method and path template.",
            ["method", "path"],
            buckets=_LATENCY_BUCKETS,
        ),
        token_store=Histogram(
            "mcp_token_store_duration_seconds",
            "Token store operations by store (env, postgres, infisical) and operation (get, check, set, import, "
            "delete). A postgres 'get' includes the audit row written in the same transaction.",
            ["store", "operation"],
            buckets=_LATENCY_BUCKETS,
        ),
        audit_write=Histogram(
            "mcp_audit_write_duration_seconds",
            "Writing audit rows: 'database' is chaining and inserting rows into audit_log (chain lock wait "
            "included), 'log' is the JSON-log sink of deployments without a database.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
        ),
        key_rotation=Histogram(
            "mcp_key_rotation_duration_seconds",
            "Encryption key rotations (re-encrypting every stored token), by result.",
            ["result"],
            buckets=_ROTATION_BUCKETS,
        ),
    )


def path_label(path: str) -> str:
    return path if path in PATHS else OTHER


def method_label(method: str) -> str:
    return method if method in ("GET", "POST", "DELETE", "HEAD", "OPTIONS") else OTHER


def record_request(method: str, path: str, status: int, seconds: float) -> None:
    method, path = method_label(method), path_label(path)
    found = instruments()
    found.http_requests.labels(method, path, str(status)).inc()
    found.http.labels(method, path).observe(seconds)


def record_auth_failure(reason: AuthFailureReason) -> None:
    instruments().auth_failures.labels(reason).inc()


class ToolNames:
    """The tools a server registered: the only names that become ``tool`` label values."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = frozenset(names)

    def label(self, name: str | None) -> str:
        return name if name is not None and name in self.names else OTHER

    def record(self, name: str | None, outcome: ToolOutcome) -> None:
        instruments().tool_calls.labels(self.label(name), outcome).inc()


def observe(histogram: HistogramName, labels: tuple[str, ...], seconds: float) -> None:
    getattr(instruments(), histogram).labels(*labels).observe(seconds)


@contextmanager
def timed(histogram: HistogramName, *labels: str) -> Iterator[None]:
    """Observe the block's duration (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe(histogram, labels, time.perf_counter() - start)


def initialize() -> None:
    """Create the fixed-label series at zero, so a rate is defined before the first failure."""
    for reason in AUTH_FAILURE_REASONS:
        instruments().auth_failures.labels(reason)
