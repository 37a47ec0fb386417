"""The JSON error answers of the HTTP contract, written in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Send


async def send_json(send: Send, status: int, body: dict[str, str], headers: Iterable[tuple[str, str]] = ()) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def unavailable_body(message: str) -> dict[str, str]:
    return {"error": "service_unavailable", "message": message}


def challenge(*parameters: str, resource_metadata: str | None) -> str:
    """A ``WWW-Authenticate: Bearer`` value; ``resource_metadata`` (RFC 9728) tells a client
    where to learn how to obtain a token."""
    parts = [*parameters, *([f'resource_metadata="{resource_metadata}"'] if resource_metadata else [])]
    return "Bearer " + ", ".join(parts)


async def send_unauthorized(send: Send, message: str, *, credential_sent: bool, resource_metadata: str | None) -> None:
    # RFC 6750 3.1: no error attribute when the request carried no credential at all.
    error = ['error="invalid_token"'] if credential_sent else []
    await send_json(
        send,
        401,
        {"error": "unauthorized", "message": message},
        [("www-authenticate", challenge('realm="mcp"', *error, resource_metadata=resource_metadata))],
    )


async def send_insufficient_scope(send: Send, scopes: Iterable[str], *, resource_metadata: str | None) -> None:
    needed = " ".join(scopes)
    await send_json(
        send,
        403,
        {
            "error": "insufficient_scope",
            "message": f"this tool needs the scope(s) {needed}, which the credential lacks",
        },
        [
            (
                "www-authenticate",
                challenge('error="insufficient_scope"', f'scope="{needed}"', resource_metadata=resource_metadata),
            )
        ],
    )


async def send_rate_limited(send: Send, retry_after: str, message: str) -> None:
    await send_json(send, 429, {"error": "rate_limited", "message": message}, [("retry-after", retry_after)])


async def send_unavailable(send: Send, message: str) -> None:
    await send_json(send, 503, unavailable_body(message))


async def send_too_large(send: Send) -> None:
    await send_json(send, 413, {"error": "payload_too_large", "message": "request body too large"})
