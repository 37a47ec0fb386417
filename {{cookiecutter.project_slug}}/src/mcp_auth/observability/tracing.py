"""OpenTelemetry spans through the API only (always installed: FastMCP uses it too).

Without an SDK every span is a no-op. With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set and the ``otel``
extra installed, ``configure_tracing`` installs an SDK TracerProvider exporting over OTLP/HTTP
(``service.name`` = the project slug); set without the extra, one warning line and no export.

Span attributes carry the caller's subject (``enduser.id``), the tool name and store names,
never a credential, token or key.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

logger = logging.getLogger("mcp_auth.tracing")

TRACER_NAME = "mcp_auth"
ENDUSER_ID = "enduser.id"
TOOL_NAME = "gen_ai.tool.name"
OTLP_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
"""Where the otel extra's OTLP/HTTP span exporter lives (imported only when an endpoint is set)."""

_installed = False


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def _off() -> bool:
    """True while no SDK provider is installed: every span would be a no-op, and skipping the
    API's context bookkeeping saves ~10 us a span on the request path."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    """A child of the current span; None-valued attributes are left out."""
    if _off():
        yield trace.INVALID_SPAN
        return
    attrs = {key: value for key, value in (attributes or {}).items() if value is not None}
    # Exceptions are recorded by type only: a message or a chained traceback from a driver or an
    # HTTP client could quote a host or a DSN.
    with tracer().start_as_current_span(
        name, kind=kind, attributes=attrs, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__qualname__)
            fail(current, type(exc).__qualname__)
            raise


@contextmanager
def server_span(name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Iterator[Span]:
    """The request's SERVER span, continuing the caller's W3C ``traceparent`` when it sends one."""
    if _off():
        yield trace.INVALID_SPAN
        return
    parent: Context = propagate.extract(headers)
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        yield current


def set_current(**attributes: Any) -> None:
    """Add attributes to the current span (the request's), e.g. the caller once authenticated."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes({key: value for key, value in attributes.items() if value is not None})


def fail(current: Span, description: str) -> None:
    """Mark a span failed with a fixed, secret-free description."""
    current.set_status(Status(StatusCode.ERROR, description))


def configure_tracing(endpoint: str | None, service_name: str) -> bool:
    """Install the OTLP/HTTP exporter when ``endpoint`` is set (once per process); True when
    spans are now exported. The extra missing is one warning line, not a refused start:
    tracing is diagnostics, and the server works without it."""
    global _installed
    if not endpoint or _installed:
        return _installed
    try:
        exporter = importlib.import_module(OTLP_EXPORTER_MODULE)
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed: no spans are exported "
            "(install the project with its otel extra, e.g. uv sync --extra otel)"
        )
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter.OTLPSpanExporter(endpoint=traces_url(endpoint))))
    trace.set_tracer_provider(provider)
    _installed = True
    logger.info("tracing: exporting spans over OTLP/HTTP", extra={"service": service_name})
    return True


def traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; traces go to ``/v1/traces``."""
    return endpoint.rstrip("/") + "/v1/traces"


def flush_tracing() -> None:
    """Export what is buffered (the lifespan's end); the SDK shuts down at exit by itself."""
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if _installed and force_flush is not None:
        force_flush()
