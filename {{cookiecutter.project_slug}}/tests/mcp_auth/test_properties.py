"""Property-based tests ("Trust under attack"): whatever arrives, the parsers and checks either
answer or raise one of our own errors (``mcp_auth.errors``), never another exception; the
redaction never lets a registered secret through.

Deterministic in CI: derandomized, a fixed number of examples, no deadline (a slow CI box is not
a failure).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp_auth.asgi.request_body import dispatchable_tool_call
from mcp_auth.authenticator import Authenticator, bearer_token, cloudflare_jwt
from mcp_auth.config import McpAuthSettings, load_settings
from mcp_auth.crypto import KEY_BYTES, Envelope, Keyring, key_id, parse_key
from mcp_auth.errors import AuthenticationFailed, ConfigError, DecryptionError, McpAuthError, ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.logs import redact, register_secret
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.settings import DEMO, DEMO_BEARER
from mcp_auth.verifiers import CloudflareAccessVerifier, JwksCache, StaticBearerVerifier
from starlette.datastructures import Headers

FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ASGI header values are bytes, read as latin-1: every code point below 256 can arrive.
latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=200)
b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.+/", max_size=120)
HEADER_NAMES = [
    "authorization",
    "cf-access-jwt-assertion",
    "cookie",
    "cf-access-authenticated-user-email",
    "x-forwarded-for",
    "content-type",
]


def _header_value(valid_jwt: str) -> st.SearchStrategy[str]:
    return st.one_of(
        latin1,
        b64ish,
        st.builds(
            lambda s, t: f"{s} {t}", st.sampled_from(["Bearer", "bearer", "Basic", "BEARER", "", "Bearer\t"]), latin1
        ),
        st.builds(lambda t: f"Bearer {t}", b64ish),
        st.builds(lambda t: f"eyJ{t}", b64ish),
        st.builds(lambda a, b: f"{a}CF_Authorization={b}", latin1, st.one_of(latin1, b64ish)),
        st.builds(
            lambda i, c: valid_jwt[:i] + c + valid_jwt[i + 1 :], st.integers(0, len(valid_jwt) - 1), st.characters()
        ),
        st.builds(lambda i: valid_jwt[:i], st.integers(0, len(valid_jwt))),
        st.just(f"Bearer {DEMO_BEARER}"),
        st.just(valid_jwt),
    )


def _raw_headers(valid_jwt: str) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    name = st.one_of(
        st.sampled_from(HEADER_NAMES), st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
    )
    pair = st.tuples(name, _header_value(valid_jwt)).map(
        lambda p: (p[0].encode("latin-1"), p[1].encode("latin-1", errors="replace"))
    )
    return st.lists(pair, max_size=6)


@pytest.fixture(scope="module")
def jwt_sample() -> str:
    """A syntactically real Access JWT (signed by a key nobody serves) to mutate."""
    fake = FakeCloudflareAccess()
    return fake.mint()


# ----- header / cookie parsers ---------------------------------------------------------------


@FAST
@given(data=st.data())
def test_credential_parsers_return_a_string_or_none(data: st.DataObject, jwt_sample: str) -> None:
    headers = Headers(raw=data.draw(_raw_headers(jwt_sample)))
    for parse in (cloudflare_jwt, bearer_token):
        try:
            found = parse(headers)
        except McpAuthError:
            continue
        assert found is None or (isinstance(found, str) and found and found == found.strip())


@FAST
@given(
    cookie=st.one_of(
        latin1,
        st.lists(st.tuples(latin1, latin1), max_size=4).map(lambda kv: "; ".join(f"{k}={v}" for k, v in kv)),
    )
)
def test_a_malformed_cookie_never_hides_cf_authorization(cookie: str) -> None:
    """Browsers (and Starlette) skip a bad cookie and read on; so must we: a cookie string
    followed by ``; CF_Authorization=<token>`` always yields the token."""
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    if "CF_Authorization" in cookie:
        return
    assert cloudflare_jwt({"cookie": f"{cookie}; CF_Authorization={token}"}) == token


@pytest.fixture(scope="module")
def authenticator(cloudflare_access: FakeCloudflareAccess) -> Authenticator:
    cloudflare = CloudflareAccessVerifier(
        team_domain=cloudflare_access.team_domain,
        audiences=[cloudflare_access.audience],
        jwks=JwksCache(cloudflare_access.certs_url),
    )
    return Authenticator("both", cloudflare=cloudflare, bearer=[StaticBearerVerifier({DEMO_BEARER: "ci-bot"})])


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@FAST
@given(data=st.data())
def test_authenticate_answers_or_raises_only_our_errors(
    data: st.DataObject,
    authenticator: Authenticator,
    cloudflare_access: FakeCloudflareAccess,
    loop: asyncio.AbstractEventLoop,
) -> None:
    valid_jwt = cloudflare_access.mint(email="prop@example.com")
    headers = Headers(raw=data.draw(_raw_headers(valid_jwt)))
    try:
        identity = loop.run_until_complete(authenticator.authenticate(headers))
    except (AuthenticationFailed, ServiceUnavailable):
        return
    assert isinstance(identity, Identity)
    # Only the two real credentials of this run can ever authenticate.
    assert (identity.subject, identity.method) in {("ci-bot", "bearer"), ("prop@example.com", "cloudflare")}


# ----- JSON-RPC check ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _nested(depth: int, opener: bytes, closer: bytes, core: bytes = b"") -> bytes:
    return opener * depth + core + closer * depth


@FAST
@given(
    body=st.one_of(
        st.binary(max_size=400),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda d, o: _nested(d, *o),
            st.one_of(st.integers(0, 3000), st.sampled_from([100_000, 200_000])),
            st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"method":"tools/call","params":[', b"]}")]),
        ),
        st.builds(
            lambda prefix, v: prefix + json.dumps(v).encode(),
            st.sampled_from([b"\xef\xbb\xbf", b" ", b"\xff"]),
            json_values,
        ),
    )
)
@example(body=b"[" * 300_000)
@example(body=b'{"id":' + b"9" * 50_000 + b"}")
@example(body=b'{"method":"tools/call"}' * 2)
def test_dispatchable_tool_call_never_raises(body: bytes) -> None:
    name = dispatchable_tool_call(JSON_HEADERS, body)
    assert name is None or isinstance(name, str)


@FAST
@given(
    name=st.text(min_size=1, max_size=40),
    request_id=st.one_of(st.integers(), st.text(max_size=10)),
    extra=st.lists(json_values, max_size=3),
)
def test_only_a_single_well_formed_request_is_dispatchable(name: str, request_id: int | str, extra: list[Any]) -> None:
    """What the MCP transport dispatches is what gets authorized, resolved and audited: one
    JSON-RPC 2.0 request with an id, in UTF-8 without a byte-order mark; never a batch."""
    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}}
    body = json.dumps(message).encode()
    assert dispatchable_tool_call(JSON_HEADERS, body) == name
    assert dispatchable_tool_call(JSON_HEADERS, json.dumps([*extra, message]).encode()) is None
    assert dispatchable_tool_call(JSON_HEADERS, b"\xef\xbb\xbf" + body) is None
    notification = {key: value for key, value in message.items() if key != "id"}
    assert dispatchable_tool_call(JSON_HEADERS, json.dumps(notification).encode()) is None
    assert dispatchable_tool_call({**JSON_HEADERS, "accept": "text/html"}, body) is None
    assert dispatchable_tool_call({**JSON_HEADERS, "content-type": "text/plain"}, body) is None
    assert dispatchable_tool_call({**JSON_HEADERS, "mcp-protocol-version": "1999-01-01"}, body) is None


JSON_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


# ----- ciphertext decoder --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring(secrets.token_bytes(KEY_BYTES), [secrets.token_bytes(KEY_BYTES)])


@FAST
@given(
    service=st.text(max_size=30),
    key=st.text(max_size=30),
    kid=st.one_of(st.text(max_size=20), st.just("")),
    nonce=st.binary(max_size=40),
    ciphertext=st.binary(max_size=200),
    use_known_kid=st.booleans(),
)
@example(service="s", key="k", kid="", nonce=b"", ciphertext=b"", use_known_kid=True)
@example(service="s", key="k", kid="", nonce=b"\x00" * 12, ciphertext=b"\x00" * 3, use_known_kid=True)
@example(service="s", key="k", kid="", nonce=b"\x00" * 200, ciphertext=b"\x00" * 32, use_known_kid=True)
def test_decrypt_raises_only_decryption_error(
    keyring: Keyring, service: str, key: str, kid: str, nonce: bytes, ciphertext: bytes, use_known_kid: bool
) -> None:
    envelope = Envelope(keyring.ids[len(nonce) % 2] if use_known_kid else kid, nonce, ciphertext)
    with pytest.raises(DecryptionError):
        keyring.decrypt(service, key, envelope)


def test_decrypt_of_an_authentic_non_utf8_plaintext_is_a_decryption_error() -> None:
    """A row sealed under our key whose plaintext is not UTF-8 (a foreign writer, a bug) is a
    DecryptionError naming the token, not a UnicodeDecodeError out of the store."""
    raw = secrets.token_bytes(KEY_BYTES)
    keyring = Keyring(raw)
    # mcp_auth's AAD for (svc, default); checked against a real envelope first.
    aad = b"".join((b"mcp-auth token v1\x00", (3).to_bytes(4, "big"), b"svc", (7).to_bytes(4, "big"), b"default"))
    sealed = keyring.encrypt("svc", "default", "placeholder")
    assert AESGCM(raw).decrypt(sealed.nonce, sealed.ciphertext, aad) == b"placeholder"
    nonce = secrets.token_bytes(12)
    bad = Envelope(key_id(raw), nonce, AESGCM(raw).encrypt(nonce, b"\xff\xfe\xfd", aad))
    with pytest.raises(DecryptionError):
        keyring.decrypt("svc", "default", bad)


@FAST
@given(
    text=st.one_of(
        st.text(max_size=80), b64ish, st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode())
    )
)
@example(text=base64.b64encode(b"\x00" * 32).decode() + "\x00")
@example(text="=" * 44)
@example(text="\u0661" * 44)
def test_parse_key_raises_only_config_error(text: str) -> None:
    try:
        key = parse_key(text, name="MCP_AUTH_ENCRYPTION_KEY")
    except ConfigError as exc:
        assert "MCP_AUTH_ENCRYPTION_KEY" in str(exc)
        assert not text.strip() or text.strip() not in str(exc)
        return
    assert isinstance(key, bytes) and len(key) == KEY_BYTES


# ----- settings parser -----------------------------------------------------------------------

KNOWN_VARIABLES = sorted(
    {
        name
        for field in McpAuthSettings.model_fields.values()
        for name in (
            getattr(field.validation_alias, "choices", None) or [field.validation_alias]
            if field.validation_alias
            else []
        )
        if isinstance(name, str)
    }
    | {
        # The contract's variables (the README's runtime table), whether or not this version reads them yet.
        "MCP_ALLOW_SHORT_TOKENS",
        "MCP_AUDIT_KEY",
        "MCP_RESOURCE_URL",
        "MCP_AUTHORIZATION_SERVERS",
        "MCP_OIDC_ISSUER",
        "MCP_OIDC_AUDIENCE",
        "MCP_CF_GROUP_SCOPES",
        "MCP_RATE_LIMIT",
        "MCP_METRICS_PORT",
        DEMO.service_token_env,
    }
)

variable_values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "",
            " ",
            "both",
            "bearer",
            "cloudflare",
            "env",
            "postgres",
            "infisical",
            "1",
            "0",
            "-1",
            "nan",
            "inf",
            "1e309",
            "99999999999999999999",
            "https://[",
            "http://[::1",
            "https://team.cloudflareaccess.com",
            "https://team.cloudflareaccess.com:99999",
            "http://127.0.0.1:1",
            "postgresql://u:p@[::1",
            "postgresql://:pw@h/db",
            "sqlite:///:memory:",
            "a=b,c",
            "=,=",
            "ci=" + "x" * 40,
            base64.b64encode(b"\x00" * 32).decode(),
            "10/second",
            "0/minute",
            "x/y",
            "g=s;;=",
        ]
    ),
)


@FAST
@given(environ=st.dictionaries(st.sampled_from(KNOWN_VARIABLES), variable_values, max_size=10))
@example(environ={"MCP_AUTH_MODE": "cloudflare", "CF_ACCESS_TEAM_DOMAIN": "https://[", "CF_ACCESS_AUD": "a"})
@example(environ={"MCP_AUTH_MODE": "cloudflare", "CF_ACCESS_TEAM_DOMAIN": "http://[::1", "CF_ACCESS_AUD": "a"})
@example(
    environ={
        "MCP_AUTH_MODE": "cloudflare",
        "CF_ACCESS_TEAM_DOMAIN": "https://team.cloudflareaccess.com",
        "CF_ACCESS_AUD": "a",
        "CF_ACCESS_CERTS_URL": "http://[::1",
    }
)
@example(environ={"MCP_PORT": "1e309"})
@example(environ={"MCP_TOKEN_CACHE_TTL": "nan"})
def test_settings_parser_raises_only_config_error(environ: dict[str, str]) -> None:
    try:
        loaded = load_settings(DEMO, environ=environ)
    except ConfigError as exc:
        _assert_one_line(exc)
        return
    try:
        loaded.validate_startup()
    except ConfigError as exc:
        _assert_one_line(exc)


def _assert_one_line(exc: ConfigError) -> None:
    assert "\n" not in exc.message.strip()


# ----- log redaction -------------------------------------------------------------------------

# A marker keeps the generated secrets from redacting other tests' log lines (the registry is global).
secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~+/=@:%!#$&*", min_size=4, max_size=40).map(
    lambda s: "prop-secret-" + s
)


@FAST
@given(
    secrets_=st.lists(secret_text, min_size=1, max_size=4, unique=True),
    fillers=st.lists(st.text(max_size=30), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_redact_never_returns_a_registered_secret(
    secrets_: list[str], fillers: list[str], order: random.Random
) -> None:
    for secret in secrets_:
        register_secret(secret)
    parts = [*fillers, *secrets_, *secrets_]
    order.shuffle(parts)
    text = "".join(parts)
    redacted = redact(text)
    for secret in secrets_:
        assert secret not in redacted


passwords = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789@:!$&*()+,;=%-._~", min_size=10, max_size=30).filter(
    lambda p: not p.startswith((":", "@")) and p.strip()
)


@FAST
@given(
    password=passwords,
    user=st.sampled_from(["", "app", "postgres"]),
    scheme=st.sampled_from(["postgresql", "postgresql+psycopg"]),
)
@example(password="p@ss@word-0123", user="app", scheme="postgresql")
@example(password="hunter2-secret-pw", user="", scheme="postgresql")
def test_redact_hides_the_database_password_in_a_url(password: str, user: str, scheme: str) -> None:
    line = f"connecting to {scheme}://{user}:{password}@db.internal:5432/app failed"
    assert password not in redact(line)


@pytest.mark.parametrize(
    "line",
    [
        "dsn: host=db.internal port=5432 user=app password=hunter2-secret-pw dbname=app",
        "dsn: host=db.internal password='hunter2-secret-pw' dbname=app",
        "PGPASSWORD=hunter2-secret-pw psql",
        "postgresql://:hunter2-secret-pw@db.internal/app",
        "postgresql://app:hunter2@secret-pw@db.internal/app",
        "sqlalchemy: postgresql+psycopg://app:hunter2-secret-pw@db.internal:5432/app?sslmode=require",
        "url=postgresql://app:hunter2-secret-pw@db.internal/app, other=postgresql://a:hunter2-secret-pw@x/y",
    ],
)
def test_redact_hides_the_database_password_in_every_form(line: str) -> None:
    redacted = redact(line)
    assert "hunter2-secret-pw" not in redacted
    assert "secret-pw" not in redacted


def test_redact_of_a_jwt_and_an_api_key() -> None:
    token = jwt.encode({"email": "a@example.com"}, "k" * 32, algorithm="HS256")
    assert token not in redact(f"header Cf-Access-Jwt-Assertion: {token}")
    key = "mcpk_" + "A" * 43
    assert key not in redact(f"Authorization: Bearer {key}") and key not in redact(f"key={key}")
