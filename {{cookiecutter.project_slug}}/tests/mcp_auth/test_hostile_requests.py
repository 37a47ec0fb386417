"""A hostile corpus against the real ASGI app ("Trust under attack"): forged, confused and
malformed credentials and requests, each a row with its expected status.

Every row is sent as a raw ASGI request (so duplicate headers, non-UTF-8 bytes and
un-normalised paths reach the app exactly as written) and must:

- never answer 500 (and never raise out of the app: that is a 500 behind a real server);
- never reach a tool unless the row expects an authenticated caller, and then only as that caller;
- answer every 401 with the contract's JSON ``{"error": "unauthorized", "message": ...}`` and a
  ``WWW-Authenticate: Bearer ...`` header;
- never echo a credential it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import mcp_auth
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastmcp import FastMCP
from jwt.algorithms import RSAAlgorithm
from mcp_auth.asgi.app import build_http_app
from mcp_auth.config import load_settings
from mcp_auth.db import Database
from mcp_auth.db.keys import ApiKeyStore
from mcp_auth.errors import ConfigError
from mcp_auth.runtime import Runtime
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.settings import DEMO, DEMO_BEARER, make_settings
from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN
from starlette.applications import Starlette
from starlette.types import Message

UPSTREAM = "hostile-upstream-token-value-0001"
KEY_OWNER = "robot@example.com"
CLIENT_ADDR = "203.0.113.7"
INVALID_JWT = "Invalid JWT"

Headers = list[tuple[bytes, bytes]]


# ----- forging helpers ----------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT with exactly this header and these claims, signed with whatever bytes are given."""
    return f"{segment(header)}.{segment(claims)}.{b64url(signature)}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT (rightly) refuses to use a public key as an HMAC secret."""
    signing_input = f"{segment(header)}.{segment(claims)}".encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64url(signature)}"


def swap_claims(token: str, claims: dict[str, Any]) -> str:
    """Keep a real token's header and signature, put other claims in."""
    header, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    return f"{header}.{segment(claims)}.{signature}"


def flip_last(token: str) -> str:
    return token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]


# ----- the kit every row draws on -----------------------------------------------------------


@dataclass
class Kit:
    cf: FakeCloudflareAccess
    attacker: FakeCloudflareAccess
    api_key: str = ""
    revoked_key: str = ""
    expired_key: str = ""
    calls: list[tuple[str, str, bool]] = field(default_factory=list)
    """(subject, method, token resolved) of every tool call that ran."""

    def jwt(self, **claims: Any) -> str:
        return self.cf.mint(**claims)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        return self.cf.claims(**overrides)

    def header(self, **extra: Any) -> dict[str, Any]:
        return {"alg": "RS256", "typ": "JWT", "kid": self.cf.kid, **extra}

    def public_pem(self, fmt: serialization.PublicFormat) -> bytes:
        return self.cf.key.public_key().public_bytes(serialization.Encoding.PEM, fmt)

    def signed(self, claims: dict[str, Any]) -> str:
        """Claims exactly as given, really signed with the team's key (PyJWT's JWT layer would
        refuse some of them on the way out)."""
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jwt.PyJWS().encode(payload, self.cf.key, algorithm="RS256", headers={"kid": self.cf.kid})

    def attacker_jwt(self, **header: Any) -> str:
        return jwt.encode(self.claims(), self.attacker.key, algorithm="RS256", headers=header)


@dataclass(frozen=True)
class Req:
    headers: Headers = field(default_factory=list)
    method: str = "POST"
    path: str = "/mcp"
    raw_path: bytes | None = None
    query: bytes = b""
    body: bytes | None = None  # None: a tools/call of whoami
    chunks: int = 1
    scope_type: str = "http"
    json_headers: bool = True


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes
    websocket_close: int | None = None
    websocket_accepted: bool = False

    def header(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k.decode("latin-1").lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)


Anything = frozenset({200, 202, 204, 400, 401, 403, 404, 405, 406, 413, 415, 422})


@dataclass(frozen=True)
class Case:
    id: str
    request: Callable[[Kit], Req]
    expect: int | frozenset[int]
    identity: str | None = None
    """Who the tool must see when the request reaches one (an authenticated row)."""
    message: str | None = None
    """The exact 401 message, when the contract fixes it."""


def tool_call_body() -> bytes:
    return json.dumps(jsonrpc("tools/call", {"name": "whoami", "arguments": {}})).encode()


def h(*pairs: tuple[str, str | bytes]) -> Headers:
    return [(k.lower().encode("latin-1"), v if isinstance(v, bytes) else v.encode("latin-1")) for k, v in pairs]


def cf(token: str) -> Headers:
    return h(("Cf-Access-Jwt-Assertion", token))


def bearer(token: str) -> Headers:
    return h(("Authorization", f"Bearer {token}"))


def auth() -> Headers:
    return bearer(DEMO_BEARER)


def jwt_row(id: str, token: Callable[[Kit], str]) -> Case:
    return Case(id, lambda k: Req(cf(token(k))), 401, message=INVALID_JWT)


def unauth(id: str, request: Callable[[Kit], Req]) -> Case:
    return Case(id, request, 401)


def method_row(method: str) -> Case:
    return unauth(f"method-{method.lower()}", lambda k: Req(method=method))


BOT = "ci-bot"
RPC = b'{"jsonrpc":"2.0","id":1,'
CALL_WHOAMI = b'"params":{"name":"whoami","arguments":{}}}'

CASES: list[Case] = [
    # --- algorithm confusion --------------------------------------------------------------
    jwt_row("alg-none", lambda k: forge(k.header(alg="none"), k.claims())),
    jwt_row("alg-None", lambda k: forge(k.header(alg="None"), k.claims())),
    jwt_row("alg-nOnE", lambda k: forge(k.header(alg="nOnE"), k.claims())),
    jwt_row("alg-none-real-signature", lambda k: forge(k.header(alg="none"), k.claims(), b"x" * 256)),
    jwt_row("alg-missing", lambda k: forge({"typ": "JWT", "kid": k.cf.kid}, k.claims())),
    jwt_row(
        "hs256-public-key-pem-spki",
        lambda k: hs256(
            k.header(alg="HS256"), k.claims(), k.public_pem(serialization.PublicFormat.SubjectPublicKeyInfo)
        ),
    ),
    jwt_row(
        "hs256-public-key-pem-pkcs1",
        lambda k: hs256(k.header(alg="HS256"), k.claims(), k.public_pem(serialization.PublicFormat.PKCS1)),
    ),
    jwt_row(
        "hs256-public-key-jwk-bytes",
        lambda k: hs256(k.header(alg="HS256"), k.claims(), RSAAlgorithm.to_jwk(k.cf.key.public_key()).encode()),
    ),
    jwt_row("hs256-kid-as-secret", lambda k: hs256(k.header(alg="HS256"), k.claims(), k.cf.kid.encode())),
    jwt_row("rs512-right-key", lambda k: k.cf.mint(algorithm="RS512")),
    jwt_row("ps256-right-key", lambda k: k.cf.mint(algorithm="PS256")),
    jwt_row(
        "es256-attacker-key",
        lambda k: jwt.encode(
            k.claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": k.cf.kid}
        ),
    ),
    # --- key selection tricks ---------------------------------------------------------------
    jwt_row("attacker-key-real-kid", lambda k: k.attacker_jwt(kid=k.cf.kid)),
    jwt_row(
        "embedded-jwk-attacker",
        lambda k: k.attacker_jwt(kid=k.attacker.kid, jwk=json.loads(RSAAlgorithm.to_jwk(k.attacker.key.public_key()))),
    ),
    jwt_row(
        "embedded-jwk-real-kid",
        lambda k: k.attacker_jwt(kid=k.cf.kid, jwk=json.loads(RSAAlgorithm.to_jwk(k.attacker.key.public_key()))),
    ),
    jwt_row("jku-attacker-jwks", lambda k: k.attacker_jwt(kid=k.attacker.kid, jku=k.attacker.certs_url)),
    jwt_row("x5u-attacker", lambda k: k.attacker_jwt(kid=k.attacker.kid, x5u=k.attacker.certs_url)),
    jwt_row("x5c-attacker", lambda k: k.attacker_jwt(kid=k.attacker.kid, x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOC"])),
    jwt_row("kid-path-traversal", lambda k: k.attacker_jwt(kid="../../../../../../dev/null")),
    jwt_row("kid-path-traversal-real-key", lambda k: k.cf.mint(kid="../" + k.cf.kid)),
    jwt_row("kid-unknown", lambda k: k.cf.mint(kid="0" * 32)),
    jwt_row("kid-sql", lambda k: k.cf.mint(kid="' OR '1'='1' --")),
    jwt_row("kid-missing", lambda k: jwt.encode(k.claims(), k.cf.key, algorithm="RS256")),
    jwt_row("kid-integer", lambda k: forge(k.header(kid=0), k.claims(), b"\x00" * 256)),
    jwt_row("kid-list", lambda k: forge(k.header(kid=[k.cf.kid]), k.claims(), b"\x00" * 256)),
    # --- claims -------------------------------------------------------------------------------
    jwt_row("iss-prefix-of-team", lambda k: k.jwt(iss=k.cf.team_domain[:-1])),
    jwt_row("iss-team-as-prefix", lambda k: k.jwt(iss=k.cf.team_domain + ".evil.example")),
    jwt_row("iss-trailing-slash", lambda k: k.jwt(iss=k.cf.team_domain + "/")),
    jwt_row("iss-other-team", lambda k: k.jwt(iss="https://evil.cloudflareaccess.com")),
    jwt_row("iss-list", lambda k: k.signed(k.claims(iss=[k.cf.team_domain]))),
    jwt_row("iss-missing", lambda k: k.signed(_without(k.claims(), "iss"))),
    jwt_row("aud-missing", lambda k: k.signed(_without(k.claims(), "aud"))),
    jwt_row("aud-other", lambda k: k.jwt(aud=["other-application-aud"])),
    jwt_row("aud-empty-list", lambda k: k.jwt(aud=[])),
    jwt_row("aud-prefix", lambda k: k.jwt(aud=[k.cf.audience[:-1]])),
    jwt_row("exp-missing", lambda k: k.signed(_without(k.claims(), "exp"))),
    jwt_row("exp-past", lambda k: k.jwt(expires_in=-120)),
    jwt_row("exp-not-a-number", lambda k: k.signed(k.claims(exp="never"))),
    jwt_row("nbf-future", lambda k: k.jwt(nbf=int(datetime.now(UTC).timestamp()) + 3600)),
    jwt_row("type-org", lambda k: k.jwt(type="org")),
    jwt_row("type-missing", lambda k: k.signed(_without(k.claims(), "type"))),
    jwt_row("no-email-no-common-name", lambda k: k.jwt(email=None)),
    jwt_row("email-not-a-string", lambda k: k.jwt(email=["admin@example.com"])),
    jwt_row("claims-swapped-under-real-signature", lambda k: swap_claims(k.jwt(), k.claims(email="admin@example.com"))),
    jwt_row("signature-flipped", lambda k: flip_last(k.jwt())),
    jwt_row("signature-stripped", lambda k: k.jwt().rpartition(".")[0] + "."),
    jwt_row("jwt-60kb", lambda k: forge(k.header(), {**k.claims(), "pad": "A" * 60_000}, b"\x01" * 256)),
    jwt_row("jwt-garbage", lambda k: "not.a.jwt"),
    jwt_row("jwt-empty-segments", lambda k: ".."),
    jwt_row("jwt-header-not-json", lambda k: b64url(b"\xff\xfe{") + "." + segment(k.claims()) + ".AAAA"),
    Case("jwt-non-utf8-bytes", lambda k: Req(h(("Cf-Access-Jwt-Assertion", b"eyJ\xff\xfe\x80.\xc3\x28.\xa0"))), 401),
    Case("jwt-in-query-string", lambda k: Req(query=b"CF_Authorization=" + k.jwt().encode()), 401),
    Case("cf-jwt-as-bearer", lambda k: Req(bearer(k.jwt())), 401),
    # --- duplicate and disagreeing credentials ----------------------------------------------
    Case("two-authorization-valid-first", lambda k: Req(auth() + bearer("wrong-token-0000000000000000000000")), 401),
    Case("two-authorization-valid-last", lambda k: Req(bearer("wrong-token-0000000000000000000000") + auth()), 401),
    Case("two-authorization-same", lambda k: Req(auth() + auth()), 401),
    Case("two-cf-headers-valid-last", lambda k: Req(cf(flip_last(k.jwt())) + cf(k.jwt())), 401),
    Case("two-cf-headers-valid-first", lambda k: Req(cf(k.jwt()) + cf(flip_last(k.jwt()))), 401),
    Case("two-cf-headers-two-users", lambda k: Req(cf(k.jwt()) + cf(k.jwt(email="mallory@example.com"))), 401),
    Case(
        "cf-header-and-cookie-disagree",
        lambda k: Req(cf(k.jwt()) + h(("Cookie", f"CF_Authorization={k.jwt(email='mallory@example.com')}"))),
        frozenset({200, 401}),
        identity="alice@example.com",
    ),
    Case(
        "cf-header-invalid-cookie-valid",
        lambda k: Req(cf(flip_last(k.jwt())) + h(("Cookie", f"CF_Authorization={k.jwt()}"))),
        401,
        message=INVALID_JWT,
    ),
    # Two CF_Authorization cookies (cookie tossing from a sibling subdomain) are as ambiguous as
    # two Cf-Access-Jwt-Assertion headers: refused, not settled by cookie order.
    Case(
        "two-cf-cookies",
        lambda k: Req(
            h(("Cookie", f"CF_Authorization={k.jwt()}; CF_Authorization={k.jwt(email='mallory@example.com')}"))
        ),
        401,
    ),
    Case(
        "two-cookie-headers-two-cf-cookies",
        lambda k: Req(
            h(
                ("Cookie", f"CF_Authorization={k.jwt()}"),
                ("Cookie", f"CF_Authorization={k.jwt(email='mallory@example.com')}"),
            )
        ),
        401,
    ),
    Case(
        "malformed-cookie-hides-invalid-cf-cookie-next-to-bearer",
        lambda k: Req(auth() + h(("Cookie", f'theme="dark; CF_Authorization={flip_last(k.jwt())}'))),
        401,
        message=INVALID_JWT,
    ),
    Case(
        "cookie-with-space-in-name-before-cf-cookie",
        lambda k: Req(auth() + h(("Cookie", f"a b=c; CF_Authorization={flip_last(k.jwt())}"))),
        401,
        message=INVALID_JWT,
    ),
    Case(
        "malformed-cookie-before-valid-cf-cookie",
        lambda k: Req(h(("Cookie", f'theme="dark; CF_Authorization={k.jwt()}'))),
        200,
        identity="alice@example.com",
    ),
    # --- bearer syntax ------------------------------------------------------------------------
    Case("bearer-tab", lambda k: Req(h(("Authorization", f"Bearer\t{DEMO_BEARER}"))), 401),
    Case("bearer-extra-spaces", lambda k: Req(h(("Authorization", f"Bearer    {DEMO_BEARER}  "))), 200, identity=BOT),
    Case("bearer-lowercase-scheme", lambda k: Req(h(("Authorization", f"bearer {DEMO_BEARER}"))), 200, identity=BOT),
    Case("bearer-uppercase-scheme", lambda k: Req(h(("Authorization", f"BEARER {DEMO_BEARER}"))), 200, identity=BOT),
    Case(
        "basic-scheme-user-token",
        lambda k: Req(h(("Authorization", "Basic " + base64.b64encode(f"{BOT}:{DEMO_BEARER}".encode()).decode()))),
        401,
    ),
    Case("basic-scheme-raw-token", lambda k: Req(h(("Authorization", f"Basic {DEMO_BEARER}"))), 401),
    Case("bearer-no-space", lambda k: Req(h(("Authorization", f"Bearer{DEMO_BEARER}"))), 401),
    Case("bearer-trailing-junk", lambda k: Req(bearer(f"{DEMO_BEARER} x")), 401),
    Case("bearer-prefix-of-token", lambda k: Req(bearer(DEMO_BEARER[:-1])), 401),
    Case("bearer-token-plus-suffix", lambda k: Req(bearer(DEMO_BEARER + "x")), 401),
    Case("bearer-crlf-injection", lambda k: Req(bearer(f"{DEMO_BEARER}\r\nX-Evil: 1")), 401),
    Case("bearer-nul-byte", lambda k: Req(bearer(f"{DEMO_BEARER}\x00")), 401),
    Case(
        "bearer-non-utf8-bytes", lambda k: Req(h(("Authorization", b"Bearer \xff\xfe\xfd" + DEMO_BEARER.encode()))), 401
    ),
    Case("bearer-empty", lambda k: Req(h(("Authorization", "Bearer "))), 401),
    Case("bearer-identity-name", lambda k: Req(bearer(BOT)), 401),
    Case("bearer-name-equals-token", lambda k: Req(bearer(f"{BOT}={DEMO_BEARER}")), 401),
    Case("bearer-in-proxy-authorization", lambda k: Req(h(("Proxy-Authorization", f"Bearer {DEMO_BEARER}"))), 401),
    # --- unsigned identity headers --------------------------------------------------------------
    Case("forged-cf-email-alone", lambda k: Req(h(("Cf-Access-Authenticated-User-Email", "admin@example.com"))), 401),
    Case(
        "forged-cf-email-next-to-bearer",
        lambda k: Req(auth() + h(("Cf-Access-Authenticated-User-Email", "admin@example.com"))),
        200,
        identity=BOT,
    ),
    Case(
        "forged-cf-email-next-to-jwt",
        lambda k: Req(cf(k.jwt()) + h(("Cf-Access-Authenticated-User-Email", "admin@example.com"))),
        200,
        identity="alice@example.com",
    ),
    Case(
        "forwarded-headers-alone",
        lambda k: Req(
            h(
                ("X-Forwarded-For", "127.0.0.1"),
                ("X-Real-IP", "127.0.0.1"),
                ("Forwarded", "for=127.0.0.1"),
                ("X-Forwarded-User", "admin@example.com"),
                ("X-Remote-User", "admin"),
            )
        ),
        401,
    ),
    Case(
        "forwarded-for-spoof-next-to-bearer",
        lambda k: Req(auth() + h(("X-Forwarded-For", "10.0.0.1, 127.0.0.1"), ("X-Forwarded-User", "admin"))),
        200,
        identity=BOT,
    ),
    # --- API keys -------------------------------------------------------------------------------
    Case("api-key-valid", lambda k: Req(bearer(k.api_key)), 200, identity=KEY_OWNER),
    Case("api-key-wrong-prefix", lambda k: Req(bearer("mcpx_" + k.api_key[5:])), 401),
    Case("api-key-uppercase-prefix", lambda k: Req(bearer("MCPK_" + k.api_key[5:])), 401),
    Case("api-key-too-long", lambda k: Req(bearer(k.api_key + "A")), 401),
    Case("api-key-too-short", lambda k: Req(bearer(k.api_key[:-1])), 401),
    Case("api-key-revoked", lambda k: Req(bearer(k.revoked_key)), 401),
    Case("api-key-expired", lambda k: Req(bearer(k.expired_key)), 401),
    Case("api-key-sql", lambda k: Req(bearer(("mcpk_' OR '1'='1' --" + "A" * 48)[:48])), 401),
    Case("api-key-hash-as-key", lambda k: Req(bearer(hashlib.sha256(k.api_key.encode()).hexdigest())), 401),
    # --- paths ----------------------------------------------------------------------------------
    unauth("path-double-slash", lambda k: Req(path="//mcp")),
    unauth("path-dot-segment-via-public", lambda k: Req(path="/health/../mcp")),
    unauth("path-percent-encoded-raw", lambda k: Req(path="/mcp", raw_path=b"/%6dcp")),
    unauth("path-percent-encoded-literal", lambda k: Req(path="/%6dcp")),
    unauth("path-trailing-slash", lambda k: Req(path="/mcp/")),
    unauth("path-uppercase", lambda k: Req(path="/MCP")),
    unauth("path-public-with-slash", lambda k: Req(path="/health/")),
    unauth("path-matrix-param", lambda k: Req(path="/mcp;/health")),
    unauth("path-query-to-public", lambda k: Req(path="/mcp", query=b"next=/health")),
    unauth("path-raw-public-but-mcp", lambda k: Req(path="/mcp", raw_path=b"/health")),
    Case("post-tool-call-to-health", lambda k: Req(path="/health"), 405),
    Case("post-tool-call-to-status", lambda k: Req(path="/status"), 405),
    Case("path-public-raw-mcp", lambda k: Req(path="/health", raw_path=b"/mcp"), 405),
    # --- methods and protocols ----------------------------------------------------------------
    *(method_row(m) for m in ("GET", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "HEAD")),
    Case("method-get-authenticated", lambda k: Req(auth(), method="GET", body=b""), frozenset({400, 405, 406})),
    Case("method-trace-authenticated", lambda k: Req(auth(), method="TRACE"), frozenset({400, 405, 406})),
    Case("websocket-unauthenticated", lambda k: Req(scope_type="websocket"), 1008),
    Case("websocket-authenticated", lambda k: Req(auth(), scope_type="websocket"), 1008),
    # --- bodies ---------------------------------------------------------------------------------
    unauth("body-5mb-unauthenticated", lambda k: Req(body=b" " * (5 * 1024 * 1024))),
    Case("body-5mb", lambda k: Req(auth(), body=_padded_tool_call(5 * 1024 * 1024)), 413),
    Case("body-5mb-in-chunks", lambda k: Req(auth(), body=_padded_tool_call(5 * 1024 * 1024), chunks=80), 413),
    Case("body-deeply-nested-array", lambda k: Req(auth(), body=b"[" * 200_000 + b"]" * 200_000), Anything - {200}),
    Case(
        "body-deeply-nested-params",
        lambda k: Req(auth(), body=RPC + b'"method":"tools/call","params":' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        Anything - {200},
    ),
    unauth(
        "batch-unauthenticated",
        lambda k: Req(body=json.dumps([jsonrpc("tools/call", {"name": "whoami"})] * 2).encode()),
    ),
    Case(
        "batch-authenticated",
        lambda k: Req(
            auth(), body=json.dumps([jsonrpc("tools/call", {"name": "whoami"}, id=i) for i in (1, 2)]).encode()
        ),
        Anything,
        identity=BOT,
    ),
    Case(
        "batch-list-then-call",
        lambda k: Req(
            auth(), body=json.dumps([jsonrpc("tools/list"), jsonrpc("tools/call", {"name": "whoami"}, 2)]).encode()
        ),
        Anything,
        identity=BOT,
    ),
    Case("body-utf8-bom", lambda k: Req(auth(), body=b"\xef\xbb\xbf" + tool_call_body()), Anything, identity=BOT),
    Case("body-invalid-utf8", lambda k: Req(auth(), body=RPC + b'"method":"tools/\xff\xfecall"}'), Anything - {200}),
    Case(
        "body-duplicate-method-key-call-first",
        lambda k: Req(auth(), body=RPC + b'"method":"tools/call","method":"tools/list",' + CALL_WHOAMI),
        Anything,
        identity=BOT,
    ),
    Case(
        "body-duplicate-method-key-call-last",
        lambda k: Req(auth(), body=RPC + b'"method":"tools/list","method":"tools/call",' + CALL_WHOAMI),
        Anything,
        identity=BOT,
    ),
    Case(
        "body-escaped-method",
        lambda k: Req(auth(), body=RPC + b'"method":"tools\\u002fcall",' + CALL_WHOAMI),
        Anything,
        identity=BOT,
    ),
    Case(
        "body-text-plain",
        lambda k: Req(auth() + h(("Content-Type", "text/plain")), json_headers=False),
        Anything,
        identity=BOT,
    ),
    Case(
        "body-huge-number",
        lambda k: Req(
            auth(), body=b'{"jsonrpc":"2.0","id":' + b"9" * 10_000 + b',"method":"tools/call",' + CALL_WHOAMI
        ),
        Anything,
        identity=BOT,
    ),
    Case("body-empty", lambda k: Req(auth(), body=b""), Anything - {200}),
]


def _without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != name}


def _padded_tool_call(size: int) -> bytes:
    message = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
    message["params"]["pad"] = "x" * size
    return json.dumps(message).encode()


# ----- the app and a raw ASGI client --------------------------------------------------------


@pytest.fixture(scope="module")
def attacker() -> Iterator[FakeCloudflareAccess]:
    """The attacker's own 'Cloudflare Access': a JWKS the server must never fetch."""
    fake = FakeCloudflareAccess(audience="attacker-aud").start()
    yield fake
    fake.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(
    cloudflare_access: FakeCloudflareAccess,
    attacker: FakeCloudflareAccess,
    migrated_sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Starlette, Kit]]:
    """One app (both modes, static tokens, API keys on SQLite) serving every row: its JWKS is
    fetched once, as in production, instead of once per row."""
    path = tmp_path_factory.mktemp("hostile") / "mcp_auth.db"
    shutil.copyfile(migrated_sqlite_template, path)
    url = f"sqlite:///{path}"
    kit = Kit(cloudflare_access, attacker)
    await add_api_keys(kit, url)
    app = build(kit, url)
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:  # the lifespan is entered and left in one task (anyio requires it)
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(serve())
    await asyncio.wait_for(started.wait(), timeout=20)
    yield app, kit
    stop.set()
    await task


async def add_api_keys(kit: Kit, url: str) -> None:
    """A valid, a revoked and an expired key in the database at ``url``."""
    database = Database.from_url(url, slug=DEMO.slug)
    keys = ApiKeyStore(database)
    try:
        kit.api_key = (await keys.create(KEY_OWNER)).key
        revoked = await keys.create(KEY_OWNER)
        await keys.revoke(revoked.id)
        kit.revoked_key = revoked.key
        expired = await keys.create(KEY_OWNER, expires_at=datetime.now(UTC) - timedelta(minutes=5))
        kit.expired_key = expired.key
    finally:
        database.close()


def build(kit: Kit, database_url: str, **extra: str) -> Starlette:
    mcp = FastMCP("hostile")

    @mcp.tool(tags={NEEDS_UPSTREAM_TOKEN})
    def whoami() -> dict[str, str | None]:
        ctx = mcp_auth.current()
        try:
            resolved = bool(ctx.service_token)
        except Exception:
            resolved = False
        kit.calls.append((ctx.identity.subject, ctx.identity.method, resolved))
        return ctx.identity.as_dict()

    env = {
        "MCP_AUTH_MODE": "both",
        "MCP_BEARER_TOKENS": f"{BOT}={DEMO_BEARER}",
        "DEMO_API_TOKEN": UPSTREAM,
        "DATABASE_URL": database_url,
        **kit.cf.env(),
        **extra,
    }
    return build_http_app(mcp, Runtime.from_settings(make_settings(**env)))


async def send_raw(app: Starlette, req: Req) -> Answer:
    """One request as raw ASGI; exceptions escaping the app propagate (a 500 behind uvicorn)."""
    body = tool_call_body() if req.body is None else req.body
    headers: Headers = [(b"host", b"testserver")]
    if req.json_headers:
        headers += h(*MCP_HEADERS.items())
    headers += req.headers
    if req.scope_type == "http":
        headers.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": req.scope_type,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http" if req.scope_type == "http" else "ws",
        "path": req.path,
        "raw_path": req.raw_path if req.raw_path is not None else req.path.encode("latin-1"),
        "query_string": req.query,
        "root_path": "",
        "headers": headers,
        "client": (CLIENT_ADDR, 40000),
        "server": ("testserver", 80),
        "state": {},
    }
    if req.scope_type == "http":
        scope["method"] = req.method
    size = max(1, -(-len(body) // req.chunks))
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming: list[Message] = (
        [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
        if req.scope_type == "http"
        else [{"type": "websocket.connect"}]
    )
    done = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "http.disconnect" if req.scope_type == "http" else "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.close" or (
            message["type"] == "http.response.body" and not message.get("more_body", False)
        ):
            done.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=20)
    if req.scope_type == "websocket":
        close = next((m for m in sent if m["type"] == "websocket.close"), None)
        return Answer(
            status=0,
            headers=[],
            body=b"",
            websocket_close=None if close is None else int(close.get("code", 1000)),
            websocket_accepted=any(m["type"] == "websocket.accept" for m in sent),
        )
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=int(start["status"]),
        headers=list(start.get("headers", [])),
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


def assert_contract(case: Case, req: Req, answer: Answer, kit: Kit) -> None:
    if req.scope_type == "websocket":
        assert not answer.websocket_accepted, "a websocket was accepted"
        assert answer.websocket_close == case.expect
        assert not kit.calls
        return
    expected = case.expect if isinstance(case.expect, frozenset) else frozenset({case.expect})
    assert answer.status != 500
    assert answer.status in expected, (answer.status, answer.body[:300])
    if answer.status in (401, 403, 405, 413) or case.identity is None:
        assert not kit.calls, f"a tool ran for a refused request: {kit.calls}"
    else:
        for subject, _method, resolved in kit.calls:
            assert subject == case.identity
            assert resolved, "a tool ran without its upstream token resolved (token resolution was skipped)"
        if answer.status == 200 and expected == {200}:
            assert kit.calls, "an authenticated tools/call never reached the tool"
    if answer.status == 401:
        assert answer.json() == {"error": "unauthorized", "message": answer.json()["message"]}
        assert isinstance(answer.json()["message"], str) and answer.json()["message"]
        if case.message is not None:
            assert answer.json()["message"] == case.message
        challenge = answer.header("www-authenticate")
        assert len(challenge) == 1 and challenge[0].startswith("Bearer ")
    # Nothing the caller sent as a credential comes back (body or headers).
    echoed = b"\n".join([answer.body, *(v for _, v in answer.headers)])
    for name, value in req.headers:
        if name in (b"authorization", b"cf-access-jwt-assertion", b"cookie") and len(value) >= 16:
            for part in value.replace(b";", b" ").replace(b"=", b" ").split():
                if len(part) >= 16 and part != b"CF_Authorization":  # the cookie's name is no secret
                    assert part not in echoed, f"the response echoes part of the {name.decode()} header"
    assert UPSTREAM.encode() not in echoed


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_request(case: Case, served: tuple[Starlette, Kit]) -> None:
    app, kit = served
    kit.calls.clear()
    before = kit.attacker.cert_requests
    req = case.request(kit)
    answer = await send_raw(app, req)
    assert_contract(case, req, answer, kit)
    assert kit.attacker.cert_requests == before, "the server fetched keys from a URL named in the token"


def test_corpus_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# ----- start-up refusals for weak credentials -----------------------------------------------


def _startup(**env: str) -> None:
    load_settings(DEMO, environ={"MCP_AUTH_MODE": "bearer", "DEMO_API_TOKEN": UPSTREAM, **env}).validate_startup()


@pytest.mark.parametrize("token", ["tok-9f3a", "q7" * 8, "z" * 31])
def test_short_static_bearer_token_refuses_to_start(token: str) -> None:
    with pytest.raises(ConfigError, match="MCP_BEARER_TOKENS") as raised:
        _startup(MCP_BEARER_TOKENS=f"{BOT}={token}")
    assert token not in str(raised.value)


def test_short_static_bearer_token_starts_when_explicitly_allowed() -> None:
    _startup(MCP_BEARER_TOKENS=f"{BOT}=short-dev-token", MCP_ALLOW_SHORT_TOKENS="1")
    _startup(MCP_BEARER_TOKENS=f"{BOT}={'s' * 32}")
