"""A loopback Cloudflare Access: serves the team JWKS at /cdn-cgi/access/certs and mints
RS256 application tokens shaped like Cloudflare's (aud list, iss = team domain, type "app",
email for users, common_name for service tokens)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp_auth.testing.loopback import LoopbackServer

CERTS_PATH = "/cdn-cgi/access/certs"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeCloudflareAccess:
    def __init__(self, audience: str = "test-aud-0123456789abcdef") -> None:
        self.audience = audience
        self.key = new_rsa_key()
        self.kid = uuid.uuid4().hex
        self.published: dict[str, rsa.RSAPrivateKey] = {self.kid: self.key}
        self.down = False
        self.cert_requests = 0
        self._server = LoopbackServer(self._handle)

    # ----- server -------------------------------------------------------------------------
    def start(self) -> FakeCloudflareAccess:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def team_domain(self) -> str:
        return self._server.url

    @property
    def certs_url(self) -> str:
        return self.team_domain + CERTS_PATH

    def env(self) -> dict[str, str]:
        return {"CF_ACCESS_TEAM_DOMAIN": self.team_domain, "CF_ACCESS_AUD": self.audience}

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path.split("?")[0] != CERTS_PATH:
            return 404, {"error": "not found"}
        self.cert_requests += 1
        if self.down:
            return 503, {"error": "unavailable"}
        keys = []
        for kid, key in self.published.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return 200, {"keys": keys, "public_cert": {"kid": self.kid, "cert": "unused"}}

    def rotate(self) -> str:
        """Publish a new signing key (Cloudflare rotates every ~6 weeks); returns its kid."""
        self.key = new_rsa_key()
        self.kid = uuid.uuid4().hex
        self.published[self.kid] = self.key
        return self.kid

    # ----- tokens -------------------------------------------------------------------------
    def claims(
        self,
        *,
        email: str | None = "alice@example.com",
        common_name: str | None = None,
        expires_in: int = 300,
        **overrides: Any,
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": [self.audience],
            "iss": self.team_domain,
            "iat": now,
            "nbf": now,
            "exp": now + expires_in,
            "sub": uuid.uuid4().hex,
            "type": "app",
            "identity_nonce": uuid.uuid4().hex,
        }
        if email is not None:
            claims["email"] = email
        if common_name is not None:
            claims["common_name"] = common_name
            claims["sub"] = ""
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        algorithm: str = "RS256",
        **claim_args: Any,
    ) -> str:
        return jwt.encode(
            self.claims(**claim_args),
            key or self.key,
            algorithm=algorithm,
            headers={"kid": kid or self.kid},
        )
