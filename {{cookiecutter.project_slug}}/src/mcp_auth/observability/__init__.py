"""Prometheus metrics (``metrics``), the /metrics listener on MCP_METRICS_PORT (``exporter``) and
OpenTelemetry spans (``tracing``). Labels and span attributes never hold a credential, a token or
a key: only bounded names (status codes, path templates, tool names, fixed reasons, store names)
and, on spans, the caller's subject."""
