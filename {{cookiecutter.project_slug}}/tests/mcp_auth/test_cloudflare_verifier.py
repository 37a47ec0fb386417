"""Cloudflare Access JWT verification against a loopback JWKS endpoint."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from mcp_auth.errors import AuthenticationFailed, ServiceUnavailable
from mcp_auth.testing.cloudflare import FakeCloudflareAccess, new_rsa_key
from mcp_auth.verifiers import CloudflareAccessVerifier, JwksCache, parse_group_scopes


def verifier(cf: FakeCloudflareAccess, *, min_refresh_interval: float = 30.0) -> CloudflareAccessVerifier:
    jwks = JwksCache(cf.certs_url, min_refresh_interval=min_refresh_interval)
    return CloudflareAccessVerifier(team_domain=cf.team_domain, audiences=[cf.audience], jwks=jwks)


async def assert_invalid(v: CloudflareAccessVerifier, token: str, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await v.verify(token)
    assert caught.value.message == "Invalid JWT"
    assert reason.lower() in caught.value.reason.lower()


async def test_valid_user_token_gives_email(cf_access: FakeCloudflareAccess) -> None:
    identity = await verifier(cf_access).verify(cf_access.mint(email="dana@example.com"))
    assert (identity.subject, identity.method, identity.email) == ("dana@example.com", "cloudflare", "dana@example.com")


async def test_identity_carries_expiry_and_claims(cf_access: FakeCloudflareAccess) -> None:
    identity = await verifier(cf_access).verify(cf_access.mint())
    assert identity.expires_at == identity.claims["exp"]
    assert identity.claims["type"] == "app" and identity.scopes == frozenset()


GROUP_SCOPES = {
    "eng": frozenset({"notes:read", "notes:write"}),
    "ops": frozenset({"deploy"}),
    "g-7f3a": frozenset({"billing"}),
    "sales@example.com": frozenset({"crm"}),
}


@pytest.mark.parametrize(
    ("groups", "scopes"),
    [
        (["eng", "ops", "unmapped"], {"notes:read", "notes:write", "deploy"}),
        (
            [{"name": "ops"}, {"id": "g-7f3a", "name": "Billing"}, {"email": "sales@example.com"}],
            {"deploy", "billing", "crm"},
        ),
        (["unmapped"], set()),  # no mapped group: unrestricted
        (None, set()),  # no groups claim
        ("eng", set()),  # not a list
        ([7, {"name": 3}, None], set()),
    ],
)
async def test_groups_map_to_scopes(cf_access: FakeCloudflareAccess, groups: object, scopes: set[str]) -> None:
    v = CloudflareAccessVerifier(
        team_domain=cf_access.team_domain,
        audiences=[cf_access.audience],
        jwks=JwksCache(cf_access.certs_url),
        group_scopes=GROUP_SCOPES,
    )
    assert (await v.verify(cf_access.mint(groups=groups))).scopes == scopes
    # Access puts identity-provider claims it passes through under "custom".
    assert (await v.verify(cf_access.mint(custom={"groups": groups}))).scopes == scopes


def test_parse_group_scopes() -> None:
    parsed = parse_group_scopes(" Eng Team = notes:read  notes:write ;ops=deploy;ops=audit; ")
    assert parsed == {"Eng Team": {"notes:read", "notes:write"}, "ops": {"deploy", "audit"}}
    assert parse_group_scopes("") == {}


@pytest.mark.parametrize(("text", "entry"), [("eng", "eng"), ("=read", "=read"), ("ok=read; eng= ", "eng=")])
def test_parse_group_scopes_names_the_malformed_entry(text: str, entry: str) -> None:
    with pytest.raises(ValueError, match=f"'{entry}' is not 'group=scope"):
        parse_group_scopes(text)


async def test_service_token_gives_common_name(cf_access: FakeCloudflareAccess) -> None:
    identity = await verifier(cf_access).verify(cf_access.mint(email=None, common_name="abc123.access"))
    assert (identity.subject, identity.email) == ("abc123.access", None)


async def test_any_of_several_audiences_is_accepted(cf_access: FakeCloudflareAccess) -> None:
    v = CloudflareAccessVerifier(
        team_domain=cf_access.team_domain, audiences=["other", cf_access.audience], jwks=JwksCache(cf_access.certs_url)
    )
    assert (await v.verify(cf_access.mint())).subject == "alice@example.com"


async def test_expired(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), cf_access.mint(expires_in=-60), "expired")


async def test_not_yet_valid(cf_access: FakeCloudflareAccess) -> None:
    import time

    await assert_invalid(verifier(cf_access), cf_access.mint(nbf=int(time.time()) + 600), "not yet valid")


async def test_wrong_audience(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), cf_access.mint(aud=["someone-elses-app"]), "audience")


async def test_wrong_issuer(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), cf_access.mint(iss="https://evil.cloudflareaccess.com"), "issuer")


async def test_missing_exp_is_refused(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), cf_access.mint(exp=None), "exp")


async def test_wrong_token_type(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), cf_access.mint(type="org"), "type")


async def test_alg_none_is_refused(cf_access: FakeCloudflareAccess) -> None:
    claims = cf_access.claims()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": cf_access.kid}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    await assert_invalid(verifier(cf_access), f"{header.decode()}.{body.decode()}.", "not RS256")


async def test_hs256_signed_with_the_public_key_is_refused(cf_access: FakeCloudflareAccess) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the RSA public key."""
    public_pem = cf_access.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": cf_access.kid, "typ": "JWT"}
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(cf_access.claims()).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_invalid(verifier(cf_access), f"{signing_input}.{b64(signature)}", "not RS256")


async def test_tampered_payload_fails_signature(cf_access: FakeCloudflareAccess) -> None:
    header, _payload, signature = cf_access.mint(email="eve@example.com").split(".")
    forged_claims = {**cf_access.claims(), "email": "admin@example.com"}
    forged = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    await assert_invalid(verifier(cf_access), f"{header}.{forged}.{signature}", "signature")


async def test_token_signed_by_unknown_key_is_refused(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint(key=new_rsa_key(), kid="not-a-published-kid")
    await assert_invalid(verifier(cf_access), token, "unknown signing key")


async def test_garbage_is_refused(cf_access: FakeCloudflareAccess) -> None:
    await assert_invalid(verifier(cf_access), "not.a.jwt", "malformed")


async def test_rotated_key_is_fetched_once_then_unknown_kids_are_rate_limited(cf_access: FakeCloudflareAccess) -> None:
    v = verifier(cf_access, min_refresh_interval=60.0)
    await v.verify(cf_access.mint())
    before = cf_access.cert_requests
    cf_access.rotate()
    assert (await v.verify(cf_access.mint(email="new@example.com"))).subject == "new@example.com"
    assert cf_access.cert_requests == before + 1  # unknown kid -> one refetch
    forger = new_rsa_key()  # one key (generating 2048-bit keys is slow); the kids are what vary
    for i in range(20):  # forged kids must not turn us into a JWKS flooder
        with pytest.raises(AuthenticationFailed):
            await v.verify(cf_access.mint(key=forger, kid=f"random-kid-{i}"))
    assert cf_access.cert_requests == before + 1


async def test_jwks_unreachable_without_cached_keys_is_503(cf_access: FakeCloudflareAccess) -> None:
    cf_access.down = True
    with pytest.raises(ServiceUnavailable, match="Cloudflare Access certificates unavailable"):
        await verifier(cf_access).verify(cf_access.mint())


async def test_jwks_outage_keeps_serving_cached_keys(cf_access: FakeCloudflareAccess) -> None:
    now = [0.0]
    v = CloudflareAccessVerifier(
        team_domain=cf_access.team_domain,
        audiences=[cf_access.audience],
        jwks=JwksCache(cf_access.certs_url, max_age=10, clock=lambda: now[0]),
    )
    await v.verify(cf_access.mint())
    cf_access.down = True
    now[0] = 100.0  # cache is stale and the refresh fails: the last good keys still verify
    assert (await v.verify(cf_access.mint())).subject == "alice@example.com"


async def test_jwks_fetch_times_out() -> None:
    import socket

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cdn-cgi/access/certs"
        cache = JwksCache(url, timeout=0.3)
        token = jwt.encode({"x": 1}, new_rsa_key(), algorithm="RS256", headers={"kid": "k"})
        v = CloudflareAccessVerifier(team_domain="http://127.0.0.1", audiences=["a"], jwks=cache)
        import time

        started = time.perf_counter()
        with pytest.raises(ServiceUnavailable):
            await v.verify(token)
        assert time.perf_counter() - started < 2.0
