"""A loopback OAuth 2.1 authorization server that approves everything, for tests.

Serves what an MCP client (the SDK's ``OAuthClientProvider``) and ``OidcVerifier`` use: RFC 8414
metadata (also as ``openid-configuration``), the JWKS (one RS256 and one ES256 key), dynamic
client registration (RFC 7591), ``/authorize`` (PKCE S256 and an RFC 8707 ``resource`` required;
redirects at once with a code) and ``/token`` (authorization_code and refresh_token grants)
issuing JWT access tokens. ``mint`` makes tokens directly for unit tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp_auth.testing.cloudflare import new_rsa_key
from mcp_auth.testing.loopback import LoopbackServer

DEFAULT_AUDIENCE = "https://mcp.example.test/mcp"
AUTH_METHODS = ["none", "client_secret_post"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Reply = tuple[int, Any, dict[str, str]]
"""(status, JSON-able body, extra response headers): ``/authorize`` answers 302 with a Location."""


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class _Grant:
    """What the user approved at /authorize; a code or refresh token stands for one."""

    client_id: str
    scope: str
    resource: str
    redirect_uri: str = ""
    code_challenge: str = ""


def _error(status: int, error: str, description: str = "") -> Reply:
    return status, {"error": error, "error_description": description}, {}


class FakeAuthorizationServer:
    def __init__(self, *, path: str = "", audience: str | None = None, algorithm: str = "RS256") -> None:
        """``path``: the issuer's path (``/tenant``: metadata at the RFC 8414 path-inserted URL).
        ``audience``: the ``aud`` of issued tokens instead of the requested ``resource``."""
        self.keys: dict[str, tuple[str, PrivateKey]] = {
            "RS256": (f"rsa-{uuid.uuid4().hex[:8]}", new_rsa_key()),
            "ES256": (f"ec-{uuid.uuid4().hex[:8]}", new_ec_key()),
        }
        self.algorithm = algorithm  # of the tokens /token issues
        self.audience = audience
        self.subject, self.email = "user-1", "alice@example.com"  # the user who always approves
        self.token_lifetime = 300
        self.down = False  # metadata and JWKS answer 503
        self.rfc8414 = True  # False: only openid-configuration (an OIDC-only provider)
        self.metadata_overrides: dict[str, Any] = {}  # e.g. {"issuer": "..."} for mismatch tests
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.clients: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        self._path = path.rstrip("/")
        self._server = LoopbackServer(self._handle)

    def start(self) -> FakeAuthorizationServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def issuer(self) -> str:
        return self._server.url + self._path

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "registration_endpoint": f"{self.issuer}/register",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            **self.metadata_overrides,
        }

    def jwks(self) -> dict[str, Any]:
        keys = []
        for alg, (kid, key) in self.keys.items():
            jwk = jwt.get_algorithm_by_name(alg).to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    # ----- tokens -------------------------------------------------------------------------
    def mint(
        self,
        *,
        subject: str = "user-1",
        audience: str | list[str] | None = None,
        scope: str | None = "read write",
        email: str | None = None,
        expires_in: int = 300,
        algorithm: str = "RS256",
        kid: str | None = None,
        key: PrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token. ``audience`` defaults to the configured one or DEFAULT_AUDIENCE;
        ``key`` signs instead of the published key (negative tests); a claim passed as ``None``
        (``exp=None``, ``aud=None``) is left out."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.audience or DEFAULT_AUDIENCE,
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,
            "scope": scope,
            "email": email,
            **claims,
        }
        published_kid, published_key = self.keys[algorithm]
        return jwt.encode(
            {name: value for name, value in payload.items() if value is not None},
            key or published_key,
            algorithm=algorithm,
            headers={"kid": kid or published_kid},
        )

    # ----- HTTP ---------------------------------------------------------------------------
    def _handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        url = urlsplit(target)
        self.requests.append((method, url.path))
        params = dict(parse_qsl(url.query))
        if method == "POST" and url.path == f"{self._path}/token":
            params = dict(parse_qsl(body.decode()))
        routes: dict[tuple[str, str], Callable[[dict[str, str], bytes], Reply]] = {
            ("GET", f"{self._path}/.well-known/openid-configuration"): self._serve_metadata,
            ("GET", f"{self._path}/jwks"): self._serve_jwks,
            ("POST", f"{self._path}/register"): self._register,
            ("GET", f"{self._path}/authorize"): self._authorize,
            ("POST", f"{self._path}/token"): self._token,
        }
        if self.rfc8414:
            routes[("GET", f"/.well-known/oauth-authorization-server{self._path}")] = self._serve_metadata
        route = routes.get((method, url.path))
        return route(params, body) if route else _error(404, "not_found")

    def _serve_metadata(self, params: dict[str, str], body: bytes) -> Reply:
        return _error(503, "temporarily_unavailable") if self.down else (200, self.metadata(), {})

    def _serve_jwks(self, params: dict[str, str], body: bytes) -> Reply:
        return _error(503, "temporarily_unavailable") if self.down else (200, self.jwks(), {})

    def _register(self, params: dict[str, str], body: bytes) -> Reply:
        try:
            metadata = json.loads(body)
        except ValueError:
            return _error(400, "invalid_client_metadata", "body is not JSON")
        uris = metadata.get("redirect_uris") if isinstance(metadata, dict) else None
        if not isinstance(uris, list) or not uris or not all(isinstance(uri, str) for uri in uris):
            return _error(400, "invalid_redirect_uri", "redirect_uris must be a non-empty list")
        auth_method = metadata.get("token_endpoint_auth_method") or "client_secret_post"
        if auth_method not in AUTH_METHODS:
            return _error(400, "invalid_client_metadata", f"token_endpoint_auth_method {auth_method!r}")
        client = {**metadata, "token_endpoint_auth_method": auth_method, "client_id": uuid.uuid4().hex}
        client["client_id_issued_at"] = int(time.time())
        if auth_method != "none":
            client.update(client_secret=secrets.token_urlsafe(24), client_secret_expires_at=0)
        self.clients[client["client_id"]] = client
        return 201, client, {}

    def _authorize(self, params: dict[str, str], body: bytes) -> Reply:
        client = self.clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri", "")
        if client is None or redirect_uri not in client["redirect_uris"]:
            # Never redirect to an unregistered URI (RFC 6749 section 4.1.2.1).
            return _error(400, "invalid_request", "unknown client_id or redirect_uri")
        if params.get("response_type") != "code":
            return _error(400, "unsupported_response_type")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return _error(400, "invalid_request", "PKCE with S256 is required")
        resource = params.get("resource", "")
        if not _absolute_uri(resource):
            return _error(400, "invalid_target", "resource (RFC 8707) must be an absolute URI")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(
            client["client_id"], params.get("scope", ""), resource, redirect_uri, params["code_challenge"]
        )
        query = urlencode({"code": code, **({"state": params["state"]} if "state" in params else {})})
        return 302, {}, {"location": f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"}

    def _token(self, params: dict[str, str], body: bytes) -> Reply:
        client = self.clients.get(params.get("client_id", ""))
        secret = client.get("client_secret") if client else None
        if client is None or (secret and not hmac.compare_digest(secret, params.get("client_secret", ""))):
            return _error(401, "invalid_client")
        if params.get("grant_type") == "authorization_code":
            grant = self._redeem_code(client["client_id"], params)
        elif params.get("grant_type") == "refresh_token":
            grant = self._refresh_tokens.pop(params.get("refresh_token", ""), None)  # rotated: single use
        else:
            return _error(400, "unsupported_grant_type")
        if grant is None or grant.client_id != client["client_id"]:
            return _error(400, "invalid_grant")
        if params.get("resource", grant.resource) != grant.resource:
            return _error(400, "invalid_target", "resource differs from the authorized one")
        return 200, self._issue(grant), {"cache-control": "no-store"}

    def _redeem_code(self, client_id: str, params: dict[str, str]) -> _Grant | None:
        grant = self._codes.pop(params.get("code", ""), None)  # codes are single use
        verifier = params.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if grant is None or grant.redirect_uri != params.get("redirect_uri"):
            return None
        return grant if hmac.compare_digest(challenge, grant.code_challenge) else None

    def _issue(self, grant: _Grant) -> dict[str, Any]:
        refresh_token = secrets.token_urlsafe(24)
        self._refresh_tokens[refresh_token] = grant
        access_token = self.mint(
            subject=self.subject,
            audience=self.audience or grant.resource,
            scope=grant.scope or None,
            email=self.email,
            expires_in=self.token_lifetime,
            algorithm=self.algorithm,
            client_id=grant.client_id,
        )
        issued = {"access_token": access_token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        return {**issued, "refresh_token": refresh_token, **({"scope": grant.scope} if grant.scope else {})}


def _absolute_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return bool(parts.scheme and parts.netloc) and not parts.fragment
