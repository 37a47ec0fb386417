"""InfisicalStore against a loopback fake Infisical (real HTTP, real store code, no mocks)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.errors import ConfigError, ReadOnlyStore, ServiceUnavailable
from mcp_auth.stores.infisical import InfisicalStore
from mcp_auth.testing.infisical import FakeInfisical

pytestmark = pytest.mark.asyncio

CLIENT_ID = "ua-client-id-1234"
CLIENT_SECRET = "ua-client-secret-do-not-leak-9f8e7d"
PROJECT = "proj-4711"
NAME = "CODA_API_TOKEN"
VALUE = "coda-token-value-do-not-leak-1a2b3c"
NOT_FOUND = (
    f"secret {NAME} not found in Infisical "
    "(check INFISICAL_PROJECT_ID, INFISICAL_ENVIRONMENT and INFISICAL_SECRET_PATH)"
)

StoreFactory = Callable[..., InfisicalStore]


class Clock:
    """An injectable monotonic clock, so TTL and token expiry are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeInfisical]:
    with FakeInfisical(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, project_id=PROJECT) as server:
        server.set_secret(NAME, VALUE)
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def make_store(fake: FakeInfisical, clock: Clock) -> AsyncIterator[StoreFactory]:
    made: list[InfisicalStore] = []

    def make(**overrides: Any) -> InfisicalStore:
        options: dict[str, Any] = {
            "host": fake.url,
            "project_id": PROJECT,
            "secret_name": NAME,
            "service_name": "coda",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "cache_ttl": 300.0,
            "connect_timeout": 1.0,
            "read_timeout": 1.0,
            "clock": clock,
        }
        options.update(overrides)
        store = InfisicalStore(**options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def unavailable(store: InfisicalStore) -> str:
    """The public 503 message (checked to hold no host or project id)."""
    return (await unavailable_error(store)).message


async def unavailable_error(store: InfisicalStore) -> ServiceUnavailable:
    with pytest.raises(ServiceUnavailable) as info:
        await store.get("coda", "default")
    message = info.value.message
    assert PROJECT not in message and "127.0.0.1" not in message and "http" not in message, message
    return info.value


# ----- reading --------------------------------------------------------------------------------


async def test_logs_in_then_reads_the_v4_secret(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()

    assert await store.get("coda", "default") == VALUE

    login, read = fake.requests
    assert (login.method, login.path) == ("POST", "/api/v1/auth/universal-auth/login")
    assert (read.method, read.path) == ("GET", f"/api/v4/secrets/{NAME}")
    assert read.query["projectId"] == PROJECT
    assert read.query["environment"] == "prod"
    assert read.query["secretPath"] == "/"
    assert read.headers["authorization"].startswith("Bearer fake-at.")


async def test_only_the_shared_default_token_is_served(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()

    assert await store.get("coda", "alice@example.com") is None
    assert await store.get("github", "default") is None
    assert fake.requests == []


async def test_cache_hit_within_ttl_sends_one_request(
    fake: FakeInfisical, make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store(cache_ttl=300)

    for _ in range(5):
        assert await store.get("coda", "default") == VALUE
        clock.advance(59)

    assert (fake.login_count, fake.read_count) == (1, 1)


async def test_expired_entry_is_refetched(fake: FakeInfisical, make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(cache_ttl=300)
    await store.get("coda", "default")
    fake.set_secret(NAME, "rotated-value")

    clock.advance(299)
    assert await store.get("coda", "default") == VALUE
    clock.advance(2)
    assert await store.get("coda", "default") == "rotated-value"

    assert (fake.login_count, fake.read_count) == (1, 2)


async def test_ttl_zero_disables_the_cache(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store(cache_ttl=0)

    await store.get("coda", "default")
    await store.get("coda", "default")

    assert (fake.login_count, fake.read_count) == (1, 2)


async def test_secret_name_is_url_encoded(fake: FakeInfisical, make_store: StoreFactory) -> None:
    odd = "CODA TOKEN/v2?x=1#%"
    fake.set_secret(odd, "odd-value")
    store = make_store(secret_name=odd)

    assert await store.get("coda", "default") == "odd-value"

    read = fake.requests[-1]
    assert read.raw_path == "/api/v4/secrets/CODA%20TOKEN%2Fv2%3Fx%3D1%23%25"
    assert read.path == f"/api/v4/secrets/{odd}"


async def test_secret_path_and_environment_are_sent(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.set_secret(NAME, "staging-value", environment="staging", path="/mcp/coda")
    store = make_store(environment="staging", secret_path="/mcp/coda")

    assert await store.get("coda", "default") == "staging-value"
    assert fake.requests[-1].query["secretPath"] == "/mcp/coda"


# ----- access tokens --------------------------------------------------------------------------


async def test_relogin_before_the_access_token_expires(
    fake: FakeInfisical, make_store: StoreFactory, clock: Clock
) -> None:
    fake.token_ttl = 100
    store = make_store(cache_ttl=10)
    await store.get("coda", "default")

    clock.advance(50)  # cache expired, token still good
    await store.get("coda", "default")
    assert fake.login_count == 1

    clock.advance(45)  # 95 s: inside the renew-early margin (10% of expiresIn)
    await store.get("coda", "default")

    assert (fake.login_count, fake.read_count) == (2, 3)
    tokens = [r.headers["authorization"] for r in fake.requests if r.endpoint == "read"]
    assert tokens[0] == tokens[1] != tokens[2]


async def test_token_without_expiry_is_never_renewed(
    fake: FakeInfisical, make_store: StoreFactory, clock: Clock
) -> None:
    fake.token_ttl = 0  # Infisical's "no TTL": expiresIn 0
    store = make_store(cache_ttl=10)
    await store.get("coda", "default")
    clock.advance(10**7)
    await store.get("coda", "default")

    assert (fake.login_count, fake.read_count) == (1, 2)


async def test_relogin_when_a_read_returns_401(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()
    await store.get("coda", "default")
    fake.revoke_tokens()
    store.invalidate()

    assert await store.get("coda", "default") == VALUE
    assert (fake.login_count, fake.read_count) == (2, 3)


async def test_relogin_when_infisical_says_the_token_expired(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()
    await store.get("coda", "default")
    fake.expire_tokens()  # real Infisical: 403 {"error": "TokenError"}
    store.invalidate()

    assert await store.get("coda", "default") == VALUE
    assert (fake.login_count, fake.read_count) == (2, 3)


async def test_api_key_is_used_as_bearer_without_login(fake: FakeInfisical, make_store: StoreFactory) -> None:
    token = fake.issue_token()
    store = make_store(client_id=None, client_secret=None, access_token=token)

    assert await store.get("coda", "default") == VALUE

    assert fake.login_count == 0
    assert fake.requests[0].headers["authorization"] == f"Bearer {token}"


# ----- single flight --------------------------------------------------------------------------


async def test_fifty_concurrent_gets_on_a_cold_cache_make_one_fetch(
    fake: FakeInfisical, make_store: StoreFactory
) -> None:
    fake.delay = 0.05  # keep the first fetch in flight while the others arrive
    store = make_store()

    values = await asyncio.gather(*(store.get("coda", "default") for _ in range(50)))

    assert values == [VALUE] * 50
    assert (fake.login_count, fake.read_count) == (1, 1)


async def test_concurrent_callers_share_one_failure(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.fail(500)
    store = make_store()

    results = await asyncio.gather(*(store.get("coda", "default") for _ in range(50)), return_exceptions=True)

    assert all(isinstance(r, ServiceUnavailable) for r in results)
    assert len(fake.requests) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    fake: FakeInfisical, make_store: StoreFactory
) -> None:
    fake.delay = 0.1
    store = make_store()
    first = asyncio.ensure_future(store.get("coda", "default"))
    second = asyncio.ensure_future(store.get("coda", "default"))
    await asyncio.sleep(0.02)
    first.cancel()

    assert await second == VALUE
    assert (fake.login_count, fake.read_count) == (1, 1)


# ----- failures -------------------------------------------------------------------------------


async def test_wrong_client_secret(make_store: StoreFactory) -> None:
    store = make_store(client_secret="wrong-secret")

    assert await unavailable(store) == (
        "Infisical authentication failed (universal auth login: HTTP 401; "
        "check INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET)"
    )


async def test_missing_secret(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.delete_secret(NAME)

    error = await unavailable_error(make_store())
    assert error.message == NOT_FOUND
    assert error.detail == f"project {PROJECT}, environment prod", "the log keeps where it looked"


async def test_missing_folder_or_environment(make_store: StoreFactory) -> None:
    staging = await unavailable_error(make_store(environment="staging"))
    assert (staging.message, staging.detail) == (NOT_FOUND, f"project {PROJECT}, environment staging")
    nope = await unavailable_error(make_store(secret_path="/nope"))
    assert (nope.message, nope.detail) == (NOT_FOUND, f"project {PROJECT}, environment prod, path /nope")


async def test_unreachable(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.go_down()

    error = await unavailable_error(make_store())
    assert error.message == "Infisical unreachable (connection failed: ConnectError)"
    assert error.log_detail == f"{error.message}: connection to {fake.url}"


@pytest.mark.parametrize("endpoint", ["login", "read"])
async def test_server_error(fake: FakeInfisical, make_store: StoreFactory, endpoint: Any) -> None:
    fake.fail(500, endpoint=endpoint)

    assert await unavailable(make_store()) == "Infisical unreachable (HTTP 500)"


async def test_rate_limited(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.fail(429, endpoint="read")

    assert await unavailable(make_store()) == "Infisical rate limit exceeded (HTTP 429)"


async def test_permission_denied(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.deny_read = True

    assert await unavailable(make_store()) == (
        f"Infisical denied access to secret {NAME}; give the machine identity read access to it"
    )


async def test_empty_secret(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.set_secret(NAME, "")

    assert await unavailable(make_store()) == f"secret {NAME} is empty in Infisical"


async def test_rejected_api_key(fake: FakeInfisical, make_store: StoreFactory) -> None:
    expired = fake.issue_token()
    fake.expire_tokens()

    rejected = "Infisical authentication failed (INFISICAL_API_KEY rejected: HTTP {})"
    revoked = make_store(client_id=None, client_secret=None, access_token="not-a-token")
    assert await unavailable(revoked) == rejected.format(401)
    stale = make_store(client_id=None, client_secret=None, access_token=expired)
    assert await unavailable(stale) == rejected.format(403)
    assert fake.login_count == 0


async def test_slow_server_does_not_hang_past_the_timeout(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.delay = 3.0
    store = make_store(connect_timeout=0.3, read_timeout=0.3)

    started = time.monotonic()
    error = await unavailable_error(store)

    assert time.monotonic() - started < 1.5
    assert error.message == "Infisical unreachable (request timed out)"
    assert error.detail == f"request to {fake.url}"


async def test_no_stale_value_once_the_entry_expired(
    fake: FakeInfisical, make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store(cache_ttl=300)
    assert await store.get("coda", "default") == VALUE
    fake.go_down()

    clock.advance(299)
    assert await store.get("coda", "default") == VALUE  # still fresh
    clock.advance(2)
    assert (await unavailable(store)).startswith("Infisical unreachable")


async def test_recovers_after_an_outage(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()
    fake.go_down()
    await unavailable(store)
    fake.come_up()

    assert await store.get("coda", "default") == VALUE


async def test_no_secret_in_logs_or_messages(
    fake: FakeInfisical, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    store = make_store(cache_ttl=0)

    await store.get("coda", "default")  # success
    fake.revoke_tokens()
    await store.get("coda", "default")  # 401 then re-login
    for status in (500, 403, 404, 429):
        fake.fail(status, times=1, endpoint="read")
        messages.append(await unavailable(store))
    messages.append(await unavailable(make_store(client_secret=CLIENT_SECRET + "x")))
    api_key_store = make_store(client_id=None, client_secret=None, access_token="bad-at.1")
    messages.append(await unavailable(api_key_store))

    tokens = {r.headers["authorization"].split(" ", 1)[1] for r in fake.requests if r.endpoint == "read"}
    leaked = [CLIENT_SECRET, VALUE, "bad-at.1", *tokens]
    text = caplog.text + "\n".join(messages) + "\n".join(repr(store.__dict__) for store in [store])
    for secret in leaked:
        assert secret not in text
    assert "Traceback" not in caplog.text


# ----- readiness, refresh, read-only ----------------------------------------------------------


async def test_check_reuses_the_cache(fake: FakeInfisical, make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(cache_ttl=300)

    await store.check()
    clock.advance(100)
    await store.check()
    await store.get("coda", "default")

    assert (fake.login_count, fake.read_count) == (1, 1)


async def test_check_reports_the_cause(fake: FakeInfisical, make_store: StoreFactory) -> None:
    fake.delete_secret(NAME)

    with pytest.raises(ServiceUnavailable, match=r"^secret CODA_API_TOKEN not found in Infisical"):
        await make_store().check()


async def test_invalidate_picks_up_a_rotated_secret(fake: FakeInfisical, make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.get("coda", "default") == VALUE
    fake.set_secret(NAME, "rotated-value")
    assert await store.get("coda", "default") == VALUE

    store.invalidate()

    assert await store.get("coda", "default") == "rotated-value"
    assert (fake.login_count, fake.read_count) == (1, 2)


async def test_invalidate_during_a_fetch_does_not_cache_the_old_value(
    fake: FakeInfisical, make_store: StoreFactory
) -> None:
    store = make_store()
    await store.get("coda", "default")  # logged in: the next fetch is a single read
    store.invalidate()
    fake.delay = 0.1
    in_flight = asyncio.ensure_future(store.get("coda", "default"))
    # Once the read has arrived its answer (the old value) is decided, just delivered late.
    assert await asyncio.to_thread(fake.wait_for, "read", 2)
    fake.set_secret(NAME, "rotated-value")
    store.invalidate()

    assert await in_flight == VALUE
    fake.delay = 0
    assert await store.get("coda", "default") == "rotated-value"


async def test_writes_are_refused(make_store: StoreFactory) -> None:
    store = make_store()

    with pytest.raises(ReadOnlyStore, match="managed in Infisical"):
        await store.set("coda", "default", "x")
    with pytest.raises(ReadOnlyStore, match="managed in Infisical"):
        await store.delete("coda", "default")


# ----- configuration --------------------------------------------------------------------------


def settings(**env: str) -> Any:
    project = ProjectInfo(slug="coda-mcp", service_name="coda", service_token_env=NAME)
    return load_settings(project, environ={"MCP_TOKEN_STORE": "infisical", **env})


async def test_from_settings(fake: FakeInfisical) -> None:
    store = InfisicalStore.from_settings(
        settings(
            INFISICAL_HOST=fake.url + "/api/",
            INFISICAL_CLIENT_ID=CLIENT_ID,
            INFISICAL_CLIENT_SECRET=CLIENT_SECRET,
            INFISICAL_PROJECT_ID=PROJECT,
        )
    )
    try:
        assert store.name == "infisical"
        assert await store.get("coda", "default") == VALUE  # secret name defaults to CODA_API_TOKEN
    finally:
        await store.close()


async def test_from_settings_secret_name_and_api_key(fake: FakeInfisical) -> None:
    fake.set_secret("SHARED_CODA", "shared-value", path="/mcp")
    store = InfisicalStore.from_settings(
        settings(
            INFISICAL_HOST=fake.url,
            INFISICAL_API_KEY=fake.issue_token(),
            INFISICAL_WORKSPACE_ID=PROJECT,
            INFISICAL_SECRET_PATH="/mcp",
            INFISICAL_SECRET_NAME="SHARED_CODA",
        ),
        read_timeout=0.5,
    )
    try:
        assert await store.get("coda", "default") == "shared-value"
        assert fake.login_count == 0
    finally:
        await store.close()


async def test_from_settings_refuses_incomplete_configuration() -> None:
    with pytest.raises(ConfigError, match="INFISICAL_PROJECT_ID"):
        InfisicalStore.from_settings(settings(INFISICAL_API_KEY="x"))
    with pytest.raises(ConfigError, match="INFISICAL_CLIENT_SECRET"):
        InfisicalStore.from_settings(settings(INFISICAL_PROJECT_ID=PROJECT, INFISICAL_CLIENT_ID="id"))
