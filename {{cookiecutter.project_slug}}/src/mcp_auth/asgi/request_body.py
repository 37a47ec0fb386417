"""Reading a request body once (bounded) and handing it on, and what JSON-RPC it carries."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import Message, Receive

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A ``tools/call`` found in a request body; ``name`` is None when it names no tool."""

    name: str | None


def tool_call(body: bytes) -> ToolCall | None:
    """The ``tools/call`` in the JSON-RPC message (or the first one of a batch), else None."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None  # FastMCP answers the parse error itself
    for item in message if isinstance(message, list) else [message]:
        if isinstance(item, dict) and item.get("method") == "tools/call":
            params = item.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            return ToolCall(name if isinstance(name, str) and name else None)
    return None


def is_tool_call(body: bytes) -> bool:
    """True when the JSON-RPC message (or any message of a batch) is ``tools/call``."""
    return tool_call(body) is not None


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
