"""JSON log lines on stdout, with a filter that redacts secrets even when code logs one by mistake."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

REDACTED = "[REDACTED]"

# Credential shapes worth catching even when we do not know the value.
_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),
    # JWT. Starts only where a token can start, and possessive: no backtracking, so an attacker's
    # "eyJeyJeyJ..." path costs linear time in the (synchronous) log filter.
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]*+"), REDACTED),
    (re.compile(r"mcpk_[A-Za-z0-9_-]{8,}"), REDACTED),  # our API keys
    # URL password: the user may be empty, the password may hold '@' (the host never does, so
    # the password runs to the last '@' of the URL).
    # Bounded lengths keep it linear on attacker-controlled text (an unbounded form was quadratic).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://[^:/@\s]{0,256}:)[^\s]{0,512}@"), rf"\1{REDACTED}@"),
    # Keyword forms: libpq "password=... " DSNs, query strings, PGPASSWORD=...
    (
        re.compile(r"(?i)\b(\w*(?:password|passwd|pwd)\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\"]+)"),
        rf"\1{REDACTED}",
    ),
]

_MAX_SECRETS = 4096
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()  # _secrets in the order redact() replaces them, kept in step
_secrets_lock = threading.Lock()

# LogRecord attributes that are not user "extra" fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Make the filter redact this exact value from every later log line."""
    if not value or len(value) < 6:
        return
    global _longest_first
    with _secrets_lock:
        if value in _secrets or len(_secrets) >= _MAX_SECRETS:
            return
        _secrets.add(value)
        # Sorted once per new secret, not per log line: every audited hand-out logs one.
        _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks may quote secrets; keep the type and a redacted message only.
            exc = record.exc_info[1]
            record.msg = f"{record.msg} ({type(exc).__name__}: {redact(str(exc))})"
            record.exc_info = None
            record.exc_text = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _redact_value(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, FastMCP's) to one redacted JSON stream on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastmcp", "mcp"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.propagate = True
    # The MCP SDK logs "Terminating session: None" at INFO for every stateless request: noise
    # that costs a formatted, redacted line per call.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
