"""OAuth/OIDC access-token verification against a loopback authorization server (real HTTP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp_auth.errors import AuthenticationFailed, ServiceUnavailable
from mcp_auth.testing.oidc import DEFAULT_AUDIENCE, FakeAuthorizationServer, new_ec_key
from mcp_auth.verifiers import OidcVerifier
from mcp_auth.verifiers.jwks import parse_jwks, tls_context
from mcp_auth.verifiers.oidc import metadata_urls


def verifier(idp: FakeAuthorizationServer, **options: Any) -> OidcVerifier:
    return OidcVerifier(idp.issuer, DEFAULT_AUDIENCE, **options)


async def assert_invalid(v: OidcVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await v.verify(token)
    assert caught.value.message == "Invalid JWT"
    assert reason.lower() in caught.value.reason.lower()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ----- valid tokens ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "scope_claims", "scopes"),
    [
        ("RS256", {"scope": "notes:read notes:write"}, {"notes:read", "notes:write"}),
        ("ES256", {"scope": None, "scp": ["notes:read", "admin"]}, {"notes:read", "admin"}),
        ("RS256", {"scope": None, "scp": "a b"}, {"a", "b"}),
        ("ES256", {"scope": None}, set()),
    ],
)
async def test_valid_token_gives_identity(
    idp: FakeAuthorizationServer, algorithm: str, scope_claims: dict[str, Any], scopes: set[str]
) -> None:
    token = idp.mint(subject="u-42", email="dana@example.com", algorithm=algorithm, **scope_claims)
    identity = await verifier(idp).verify(token)
    assert identity is not None
    assert (identity.subject, identity.method, identity.email) == ("u-42", "bearer", "dana@example.com")
    assert identity.scopes == scopes
    assert identity.expires_at == identity.claims["exp"] > time.time()
    assert identity.claims["iss"] == idp.issuer


async def test_audience_list_and_unverified_email(idp: FakeAuthorizationServer) -> None:
    token = idp.mint(audience=["https://other.example", DEFAULT_AUDIENCE], email="x@example.com", email_verified=False)
    identity = await verifier(idp).verify(token)
    assert identity is not None and identity.subject == "user-1" and identity.email is None


async def test_keys_are_discovered_once(idp: FakeAuthorizationServer) -> None:
    v = verifier(idp)
    for algorithm in ("RS256", "ES256", "RS256"):
        await v.verify(idp.mint(algorithm=algorithm))
    assert idp.requests == [("GET", "/.well-known/oauth-authorization-server"), ("GET", "/jwks")]


# ----- refused tokens -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"audience": "https://someone-else.example/mcp"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"expires_in": -120}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
        ({"exp": None}, '"exp"'),
        ({"aud": None}, '"aud"'),
        ({"sub": None}, '"sub"'),
        ({"subject": ""}, "sub"),
        ({"scope": 7}, "scope claim"),
        ({"scope": None, "scp": ["ok", 1]}, "scp claim"),
        ({"kid": "not-published"}, "unknown signing key"),
        ({"key": new_ec_key(), "algorithm": "ES256"}, "signature"),
    ],
)
async def test_invalid_token(idp: FakeAuthorizationServer, claims: dict[str, Any], reason: str) -> None:
    await assert_invalid(verifier(idp), idp.mint(**claims), reason)


async def test_token_alg_must_match_its_key(idp: FakeAuthorizationServer) -> None:
    es_kid = idp.keys["ES256"][0]
    await assert_invalid(verifier(idp), idp.mint(algorithm="RS256", kid=es_kid), "does not match")


async def test_alg_none_is_refused(idp: FakeAuthorizationServer) -> None:
    header = b64(json.dumps({"alg": "none", "kid": idp.keys["RS256"][0]}).encode())
    body = b64(json.dumps(jwt.decode(idp.mint(), options={"verify_signature": False})).encode())
    await assert_invalid(verifier(idp), f"{header}.{body}.", "not ES256 or RS256")


async def test_hs256_signed_with_the_public_key_is_refused(idp: FakeAuthorizationServer) -> None:
    kid, key = idp.keys["RS256"]
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(idp.mint(), options={"verify_signature": False})
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_invalid(verifier(idp), f"{signing_input}.{b64(signature)}", "not ES256 or RS256")


@pytest.mark.parametrize("credential", ["mcpk_" + "A" * 43, "random-static-token", "a.b.c", "x.y", ""])
async def test_not_a_jwt_is_left_to_other_verifiers(idp: FakeAuthorizationServer, credential: str) -> None:
    assert await verifier(idp).verify(credential) is None
    assert idp.requests == []  # decided without a fetch


# ----- discovery ------------------------------------------------------------------------------
def test_metadata_urls() -> None:
    assert metadata_urls("https://idp.example/") == [
        "https://idp.example/.well-known/oauth-authorization-server",
        "https://idp.example/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://idp.example/realms/t1") == [
        "https://idp.example/.well-known/oauth-authorization-server/realms/t1",
        "https://idp.example/realms/t1/.well-known/openid-configuration",
    ]


@pytest.mark.parametrize("issuer", ["http://idp.example", "ftp://127.0.0.1", "idp.example"])
def test_issuer_must_be_https(issuer: str) -> None:
    with pytest.raises(ValueError, match="https"):
        OidcVerifier(issuer, DEFAULT_AUDIENCE)


async def test_issuer_with_a_path_uses_the_path_inserted_metadata_url() -> None:
    server = FakeAuthorizationServer(path="/tenant").start()
    try:
        assert (await verifier(server).verify(server.mint())) is not None
        assert server.requests[0] == ("GET", "/.well-known/oauth-authorization-server/tenant")
    finally:
        server.stop()


async def test_openid_configuration_is_the_fallback(idp: FakeAuthorizationServer) -> None:
    idp.rfc8414 = False
    assert (await verifier(idp).verify(idp.mint())) is not None
    assert ("GET", "/.well-known/openid-configuration") in idp.requests


async def test_metadata_down_is_503_and_retried_after_the_interval(idp: FakeAuthorizationServer) -> None:
    now = [0.0]
    v = verifier(idp, min_refresh_interval=30.0, clock=lambda: now[0])
    idp.down = True
    for _ in range(5):
        with pytest.raises(ServiceUnavailable, match="OIDC issuer metadata unavailable") as caught:
            await v.verify(idp.mint())
    assert caught.value.detail and "HTTP 503" in caught.value.detail
    # Both metadata URLs, twice: the cache's scheduled fetch and its one unknown-kid fetch per interval.
    assert len(idp.requests) == 4
    idp.down, now[0] = False, 31.0
    assert (await v.verify(idp.mint())) is not None


@pytest.mark.parametrize(
    ("override", "detail"),
    [
        ({"issuer": "https://evil.example"}, "names issuer 'https://evil.example'"),
        ({"jwks_uri": "http://keys.example.com/jwks"}, "not an https URL"),
    ],
)
async def test_untrustworthy_metadata_is_refused(
    idp: FakeAuthorizationServer, override: dict[str, str], detail: str
) -> None:
    idp.metadata_overrides.update(override)
    with pytest.raises(ServiceUnavailable, match="OIDC issuer metadata unavailable") as caught:
        await verifier(idp).verify(idp.mint())
    assert caught.value.detail and detail in caught.value.detail


async def test_jwks_unavailable_is_503(idp: FakeAuthorizationServer) -> None:
    now = [0.0]
    v = verifier(idp, clock=lambda: now[0])
    idp.down = True
    with pytest.raises(ServiceUnavailable, match="OIDC issuer metadata unavailable"):
        await v.verify(idp.mint())
    idp.down, now[0] = False, 60.0
    idp.metadata_overrides["jwks_uri"] = f"{idp.issuer}/missing"
    with pytest.raises(ServiceUnavailable, match="OIDC issuer keys unavailable") as caught:
        await v.verify(idp.mint())
    assert caught.value.detail == f"{idp.issuer}/missing"


async def test_cached_keys_outlive_an_outage(idp: FakeAuthorizationServer) -> None:
    now = [0.0]
    v = verifier(idp, max_age=10.0, clock=lambda: now[0])
    await v.verify(idp.mint())
    idp.down, now[0] = True, 100.0  # stale and the refresh fails: the last good keys still verify
    assert (await v.verify(idp.mint(algorithm="ES256"))) is not None
    assert idp.requests[-1] == ("GET", "/jwks")


def test_jwks_parsing_infers_and_filters_algorithms(authorization_server: FakeAuthorizationServer) -> None:
    def jwk(algorithm: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, **fields: str) -> dict[str, object]:
        return {**jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key(), as_dict=True), **fields}

    rsa_key = authorization_server.keys["RS256"][1]  # generating one takes tens of ms
    keys = parse_jwks(
        {
            "keys": [
                jwk("RS256", rsa_key, kid="rsa"),  # no alg: RSA -> RS256
                jwk("ES256", new_ec_key(), kid="ec"),  # no alg: P-256 -> ES256
                jwk("ES384", ec.generate_private_key(ec.SECP384R1()), kid="p384"),
                jwk("RS256", rsa_key, kid="rs512", alg="RS512"),
                jwk("RS256", rsa_key, kid="enc", use="enc"),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                jwk("RS256", rsa_key),  # no kid
            ]
        }
    )
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {"rsa": "RS256", "ec": "ES256"}
    with pytest.raises(ValueError, match="no usable"):
        parse_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]})


# ----- the loopback authorization server itself (the end-to-end tests rely on it) --------------
def authorization_code_flow(idp: FakeAuthorizationServer, *, resource: str = DEFAULT_AUDIENCE) -> dict[str, str]:
    verifier_ = "v" * 64
    challenge = b64(hashlib.sha256(verifier_.encode()).digest())
    with httpx.Client(base_url=idp.issuer, verify=tls_context()) as client:
        registered = client.post("/register", json={"redirect_uris": ["http://localhost:3030/cb"]}).json()
        query = {
            "response_type": "code",
            "client_id": registered["client_id"],
            "redirect_uri": "http://localhost:3030/cb",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s1",
            "scope": "notes:read",
            "resource": resource,
        }
        redirect = client.get("/authorize", params=query)
        assert redirect.status_code == 302
        returned = parse_qs(urlsplit(redirect.headers["location"]).query)
        assert returned["state"] == ["s1"]
        form = {
            "grant_type": "authorization_code",
            "code": returned["code"][0],
            "redirect_uri": "http://localhost:3030/cb",
            "client_id": registered["client_id"],
            "client_secret": registered["client_secret"],
            "code_verifier": verifier_,
            "resource": resource,
        }
        tokens: dict[str, str] = client.post("/token", data=form).json()
        assert client.post("/token", data=form).json()["error"] == "invalid_grant"  # codes are single use
        refresh = {**form, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        refreshed: dict[str, str] = client.post("/token", data=refresh).json()
        return {**tokens, "refreshed": refreshed["access_token"]}


async def test_authorization_code_flow_issues_verifiable_tokens(idp: FakeAuthorizationServer) -> None:
    tokens = authorization_code_flow(idp)
    v = verifier(idp)
    for token in (tokens["access_token"], tokens["refreshed"]):
        identity = await v.verify(token)
        assert identity is not None
        assert (identity.subject, identity.email) == ("user-1", "alice@example.com")
        assert identity.scopes == {"notes:read"}
    await assert_invalid(v, authorization_code_flow(idp, resource="https://other.example/mcp")["access_token"], "aud")


def test_authorize_requires_pkce_and_resource(idp: FakeAuthorizationServer) -> None:
    with httpx.Client(base_url=idp.issuer, verify=tls_context()) as client:
        client_id = client.post("/register", json={"redirect_uris": ["http://localhost/cb"]}).json()["client_id"]
        base = {"response_type": "code", "client_id": client_id, "redirect_uri": "http://localhost/cb"}
        pkce = {"code_challenge": "c" * 43, "code_challenge_method": "S256"}
        assert client.get("/authorize", params={**base, "resource": DEFAULT_AUDIENCE}).status_code == 400
        assert client.get("/authorize", params={**base, **pkce}).json()["error"] == "invalid_target"
        wrong_uri = {**base, **pkce, "resource": DEFAULT_AUDIENCE, "redirect_uri": "http://evil/cb"}
        assert client.get("/authorize", params=wrong_uri).status_code == 400
