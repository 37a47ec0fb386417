"""Reading a request body once (bounded) and handing it on, and what JSON-RPC it carries."""

from __future__ import annotations

from collections.abc import Mapping

import pydantic_core
from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS
from starlette.types import Message, Receive

MAX_BODY_BYTES = 4 * 1024 * 1024


def dispatchable_tool_call(headers: Mapping[str, str], body: bytes) -> str | None:
    """The tool name of a ``tools/call`` that the MCP transport will dispatch, else None.

    Mirrors the checks the MCP SDK's streamable HTTP transport makes before dispatching (JSON
    accepted, JSON content type, one JSON-RPC 2.0 request parsed by the same parser, a known
    protocol version), so nothing is authorized, resolved or audited for a request it then
    refuses: a batch, a body with a byte-order mark or invalid UTF-8, a notification.
    """
    if not _transport_accepts(headers):
        return None
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") != "tools/call":
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        return None  # a notification (no id) or an id the SDK rejects
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return name if isinstance(name, str) and name else None


def _transport_accepts(headers: Mapping[str, str]) -> bool:
    accept = [part.split(";")[0].strip().lower() for part in headers.get("accept", "").split(",")]
    if not any(media in ("application/json", "application/*", "*/*") for media in accept):
        return False
    content_type = headers.get("content-type", "").split(";")[0]
    if not any(part.strip() == "application/json" for part in content_type.split(",")):
        return False
    version = headers.get("mcp-protocol-version")
    return version is None or version in SUPPORTED_PROTOCOL_VERSIONS


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The whole body, or None when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` first, then whatever the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
