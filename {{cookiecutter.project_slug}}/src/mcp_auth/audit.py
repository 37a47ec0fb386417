"""Audit trail of token access and configuration changes (spec "MCP Audit Logging").

Rows never hold a token value, key or credential: only who, what, which key name and the result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

Action = Literal["get_token", "set_token", "delete_token", "rotate_key", "import_env"]
Result = Literal["success", "failure"]

logger = logging.getLogger("mcp_auth.audit")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: Action
    service_id: str
    token_key: str | None
    user_email: str
    result: Result
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class LogAuditSink:
    """Audit events as JSON log lines, for deployments without a database (env, Infisical)."""

    async def record(self, event: AuditEvent) -> None:
        payload = asdict(event)
        payload["at"] = event.at.isoformat()
        logger.info("audit %s", json.dumps(payload, sort_keys=True), extra={"audit": payload})
