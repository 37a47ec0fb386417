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


async def send_unauthorized(send: Send, message: str, *, credential_sent: bool) -> None:
    error = ', error="invalid_token"' if credential_sent else ""
    await send_json(
        send,
        401,
        {"error": "unauthorized", "message": message},
        [("www-authenticate", f'Bearer realm="mcp"{error}')],
    )


async def send_unavailable(send: Send, message: str) -> None:
    await send_json(send, 503, unavailable_body(message))


async def send_too_large(send: Send) -> None:
    await send_json(send, 413, {"error": "payload_too_large", "message": "request body too large"})
