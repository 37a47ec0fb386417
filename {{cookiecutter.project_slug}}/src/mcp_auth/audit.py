"""Audit trail of token access and configuration changes (spec "MCP Audit Logging").

Rows never hold a token value, key or credential: only who, what, which key name and the result.
This module holds what every deployment shares: the event, the sink protocol, the JSON-log sink
for deployments without a database, and the hash of the chain. The ``audit_log`` table and its
chain live in ``mcp_auth.db.audit_log`` (imported only when there is a database).

The chain: every row stores the hash of the previous row and its own hash over (prev_hash, id,
fields), so editing or deleting a row breaks the chain at that row. Limitation shared by every
hash chain without an external anchor: dropping the newest rows leaves a valid (shorter) chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: Action
    service_id: str
    token_key: str | None
    user_email: str
    result: Result
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        # Checked when the event is made: one malformed event must never fail a batch of others.
        if self.action not in ACTIONS or self.result not in RESULTS:
            raise ValueError(f"not an audit action/result: {self.action!r}/{self.result!r}")


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class LogAuditSink:
    """Audit events as JSON log lines, for deployments without a database (env, Infisical)."""

    async def record(self, event: AuditEvent) -> None:
        payload = asdict(event)
        payload["at"] = event.at.isoformat()
        logger.info("audit %s", json.dumps(payload, sort_keys=True), extra={"audit": payload})


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
) -> str:
    """The row hash; the PostgreSQL trigger in migration 0001 computes exactly the same."""
    fields: Iterable[str | None] = (
        prev_hash,
        str(row_id),
        utc_text(at),
        service_id,
        action,
        token_key,
        user_email,
        result,
        detail,
    )
    canonical = ".".join("-" if value is None else value.encode("utf-8").hex() for value in fields)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
