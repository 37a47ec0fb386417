"""Audit trail of token access and configuration changes (spec "MCP Audit Logging").

Rows never hold a token value, key or credential: only who, what, which key name and the result.
This module holds what every deployment shares: the event, the sink protocol, the JSON-log sink
for deployments without a database, and the hash of the chain. The ``audit_log`` table and its
chain live in ``mcp_auth.db.audit_log`` (imported only when there is a database).

The chain: every row stores the hash of the previous row and its own hash over (prev_hash, id,
fields), so editing or deleting a row breaks the chain at that row. With MCP_AUDIT_KEY the hash is
an HMAC keyed with a secret kept outside the database (scheme 3): somebody who can write the table
but lacks the key cannot compute a valid hash for a changed row. Without it (schemes 1 and 2) the
chain only stops those who cannot write the table. Dropping the newest rows leaves a valid, shorter
chain: a checkpoint (``audit checkpoint``, logged by the server) kept elsewhere detects that.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Literal, Protocol, get_args

Action = Literal["get_token", "set_token", "delete_token", "rotate_key", "import_env"]
Result = Literal["success", "failure"]
ACTIONS: tuple[str, ...] = get_args(Action)
"""Every audit action; the ``audit_log`` check constraint is built from this tuple."""
RESULTS: tuple[str, ...] = get_args(Result)

logger = logging.getLogger("mcp_auth.audit")

GENESIS_HASH = "0" * 64
MAX_DETAIL = 500

SCHEME_SHA256 = 1
"""Rows written before migration 0002: SHA-256 over the nine fields of 0001."""
SCHEME_SHA256_TOOL = 2
"""Unkeyed rows from migration 0002 on: SHA-256, the tool column included."""
SCHEME_HMAC = 3
"""MCP_AUDIT_KEY set: HMAC-SHA256 keyed with it, the tool column included."""

KEYED_LOG_MESSAGE = (
    "the audit log is keyed: set MCP_AUDIT_KEY (the key the server uses) to write to it; "
    "unkeyed rows would break the chain"
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: Action
    service_id: str
    token_key: str | None
    user_email: str
    result: Result
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    tool: str | None = None
    """The tool whose call needed the token (get_token rows written while serving a tool call)."""

    def __post_init__(self) -> None:
        # Checked when the event is made: one malformed event must never fail a batch of others.
        if self.action not in ACTIONS or self.result not in RESULTS:
            raise ValueError(f"not an audit action/result: {self.action!r}/{self.result!r}")


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class LogAuditSink:
    """Audit events as JSON log lines, for deployments without a database (env, Infisical)."""

    async def record(self, event: AuditEvent) -> None:
        # The event is the line's "audit" field, once (the JSON formatter writes it; redaction
        # runs over it once): the message stays a fixed word.
        payload = {field.name: getattr(event, field.name) for field in fields(event)}
        payload["at"] = event.at.isoformat()
        logger.info("audit", extra={"audit": payload})


def utc_text(at: datetime) -> str:
    """The timestamp as the chain hashes it. SQLite hands back naive datetimes; all are UTC."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def clip_detail(detail: str | None) -> str | None:
    """A failure reason as stored: one line, at most MAX_DETAIL characters."""
    if detail is None:
        return None
    detail = " ".join(detail.split())
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"


def chain_hash(
    prev_hash: str,
    row_id: int,
    at: datetime,
    service_id: str,
    action: str,
    token_key: str | None,
    user_email: str,
    result: str,
    detail: str | None,
    *,
    tool: str | None = None,
    scheme: int = SCHEME_SHA256,
    key: bytes | None = None,
) -> str:
    """The row hash under ``scheme``. The PostgreSQL chain trigger computes schemes 1 and 2 exactly
    the same way (migrations 0001 and 0002); scheme 3 is only ever computed here, by the holder of
    ``key`` (MCP_AUDIT_KEY), which never enters the database."""
    fields: list[str | None] = [
        prev_hash,
        str(row_id),
        utc_text(at),
        service_id,
        action,
        token_key,
        user_email,
        result,
        detail,
    ]
    if scheme != SCHEME_SHA256:
        fields.append(tool)
    canonical = ".".join("-" if value is None else value.encode("utf-8").hex() for value in fields).encode("ascii")
    if scheme == SCHEME_HMAC:
        if key is None:
            raise ValueError("an HMAC chain hash needs the audit key")
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()
    if scheme not in (SCHEME_SHA256, SCHEME_SHA256_TOOL):
        raise ValueError(f"unknown audit hash scheme {scheme}")
    return hashlib.sha256(canonical).hexdigest()
