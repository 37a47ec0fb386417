"""Start-up configuration fails closed with one line naming the variable."""

from __future__ import annotations

import pytest
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.errors import ConfigError
from mcp_auth.testing.settings import DEMO, DEMO_BEARER, make_settings

CF = {"CF_ACCESS_TEAM_DOMAIN": "https://team.cloudflareaccess.com", "CF_ACCESS_AUD": "aud1"}


def refuses(match: str, **env: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        make_settings(**env).validate_startup()
    assert "\n" not in caught.value.message


def test_cloudflare_mode_needs_team_domain() -> None:
    refuses("CF_ACCESS_TEAM_DOMAIN is required", MCP_AUTH_MODE="cloudflare", CF_ACCESS_AUD="aud1")


def test_cloudflare_mode_needs_aud() -> None:
    refuses("CF_ACCESS_AUD is required", MCP_AUTH_MODE="cloudflare", CF_ACCESS_TEAM_DOMAIN=CF["CF_ACCESS_TEAM_DOMAIN"])


def test_both_mode_needs_cloudflare_settings_too() -> None:
    refuses("CF_ACCESS_TEAM_DOMAIN", MCP_AUTH_MODE="both", MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}")


def test_bearer_mode_needs_tokens_or_database() -> None:
    refuses("MCP_BEARER_TOKENS is required", MCP_AUTH_MODE="bearer")


def test_malformed_bearer_tokens_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS="just-a-secret-value-1234").validate_startup()
    assert "name=token" in caught.value.message
    assert "just-a-secret-value-1234" not in caught.value.message


def test_short_bearer_token_refuses_to_start_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS="ci=0123456789abcdef012345678901").validate_startup()
    message = caught.value.message
    assert "'ci' is shorter than 32 characters" in message and "MCP_ALLOW_SHORT_TOKENS=1" in message
    assert "0123456789abcdef" not in message


def test_short_bearer_token_is_allowed_for_development_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS="ci=short-token", MCP_ALLOW_SHORT_TOKENS="1")
    settings.validate_startup()
    assert settings.static_bearer_tokens() == {"short-token": "ci"}
    assert "shorter than 32 characters" in caplog.text and "short-token" not in caplog.text
    settings.validate_startup()
    assert caplog.text.count("shorter than 32 characters") == 1, "parsed and warned once per start"
    exactly = "x" * 32
    assert make_settings(MCP_BEARER_TOKENS=f"ci={exactly}").static_bearer_tokens() == {exactly: "ci"}


def test_certs_url_must_be_https_except_loopback() -> None:
    refuses(
        "CF_ACCESS_CERTS_URL must be an https",
        MCP_AUTH_MODE="cloudflare",
        CF_ACCESS_CERTS_URL="http://example.com/certs",
        **CF,
    )
    make_settings(MCP_AUTH_MODE="cloudflare", CF_ACCESS_CERTS_URL="http://127.0.0.1:9/certs", **CF).validate_startup()


def test_team_domain_trailing_slash_is_ignored_and_default_certs_url() -> None:
    settings = make_settings(
        MCP_AUTH_MODE="cloudflare", CF_ACCESS_TEAM_DOMAIN="https://t.cloudflareaccess.com/", CF_ACCESS_AUD="a, b"
    )
    settings.validate_startup()
    assert settings.cf_team_domain == "https://t.cloudflareaccess.com"
    assert settings.certs_url == "https://t.cloudflareaccess.com/cdn-cgi/access/certs"
    assert settings.cf_audiences == ["a", "b"]


def test_unknown_mode_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^MCP_AUTH_MODE"):
        make_settings(MCP_AUTH_MODE="oauth")


def test_postgres_store_needs_database_url_and_key() -> None:
    refuses(
        "DATABASE_URL is required",
        MCP_AUTH_MODE="bearer",
        MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}",
        MCP_TOKEN_STORE="postgres",
    )


def test_infisical_store_needs_credentials() -> None:
    refuses(
        "INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET",
        MCP_AUTH_MODE="bearer",
        MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}",
        MCP_TOKEN_STORE="infisical",
        INFISICAL_PROJECT_ID="p",
    )


def test_missing_upstream_token_is_not_a_startup_error() -> None:
    make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}").validate_startup()


def test_project_defaults_apply_and_env_overrides_them() -> None:
    project = ProjectInfo(
        slug="x",
        service_name="x",
        service_token_env="X_TOKEN",
        default_auth_mode="bearer",
        default_token_store="postgres",
        default_port=9999,
    )
    settings = load_settings(project, environ={"X_TOKEN": "tok"})
    assert (settings.auth_mode, settings.token_store, settings.port) == ("bearer", "postgres", 9999)
    assert settings.service_token is not None and settings.service_token.get_secret_value() == "tok"
    overridden = load_settings(
        project, environ={"MCP_AUTH_MODE": "cloudflare", "MCP_TOKEN_STORE": "env", "MCP_PORT": "81"}
    )
    assert (overridden.auth_mode, overridden.token_store, overridden.port) == ("cloudflare", "env", 81)


def test_blank_values_count_as_unset() -> None:
    settings = make_settings(DATABASE_URL="", MCP_PORT="", MCP_BEARER_TOKENS=" ")
    assert settings.database_url is None and settings.bearer_tokens is None and settings.port == 8080


def test_settings_repr_hides_secrets() -> None:
    settings = make_settings(MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}", DATABASE_URL="postgresql://u:hunter2pass@h/db")
    assert DEMO_BEARER not in repr(settings) and "hunter2pass" not in repr(settings)


def test_load_settings_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sourced .env or direnv in the caller's shell must not leak into explicit settings."""
    for name, value in {
        "DATABASE_URL": "postgresql://wrong:wrong@127.0.0.1:1/nope",
        "MCP_AUTH_MODE": "cloudflare",
        "MCP_BEARER_TOKENS": "x=y",
        "CF_ACCESS_AUD": "wrong",
        "INFISICAL_PROJECT_ID": "wrong",
        "DEMO_API_TOKEN": "from-the-shell",
    }.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(MCP_AUTH_MODE="bearer")
    assert settings.database_url is None and settings.bearer_tokens is None
    assert settings.cf_audiences == [] and settings.infisical_project_id is None
    assert settings.auth_mode == "bearer" and settings.service_token is None
    # Without a mapping, the process environment is the source.
    assert load_settings(DEMO).auth_mode == "cloudflare"


# ----- MCP authorization: scopes, OAuth access tokens, discovery, rate limits ---------------------

BEARER = {"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": f"ci={DEMO_BEARER}"}
OIDC = {"MCP_OIDC_ISSUER": "https://login.example.com/", "MCP_OIDC_AUDIENCE": "https://mcp.example.com/mcp"}


def test_static_tokens_may_carry_scopes() -> None:
    settings = make_settings(
        MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}, reader[a:read  b]={'r' * 32}"
    )
    settings.validate_startup()
    assert settings.static_bearer_tokens() == {DEMO_BEARER: "ci", "r" * 32: "reader"}
    assert settings.static_bearer_scopes() == {"reader": frozenset({"a:read", "b"})}


@pytest.mark.parametrize(
    ("entry", "match"),
    [("reader[a:read=", "close the scope list"), ('reader[a"b]=', "not a valid scope"), ("[a]=", "name=token")],
)
def test_malformed_token_scopes_are_refused_without_echoing_the_token(entry: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=entry + "s" * 32).validate_startup()
    assert "s" * 32 not in caught.value.message


def test_oidc_needs_issuer_and_audience_and_a_bearer_mode() -> None:
    refuses("MCP_OIDC_AUDIENCE is required", **BEARER, MCP_OIDC_ISSUER=OIDC["MCP_OIDC_ISSUER"])
    refuses("MCP_OIDC_ISSUER is required", **BEARER, MCP_OIDC_AUDIENCE=OIDC["MCP_OIDC_AUDIENCE"])
    refuses("MCP_AUTH_MODE=bearer or both", **CF, **OIDC, MCP_AUTH_MODE="cloudflare")
    refuses("MCP_OIDC_ISSUER must be an https:// URL", **BEARER, **OIDC | {"MCP_OIDC_ISSUER": "http://idp.example.com"})
    settings = make_settings(MCP_AUTH_MODE="bearer", **OIDC)  # OAuth tokens alone are enough for bearer mode
    settings.validate_startup()
    assert settings.oidc_issuer == "https://login.example.com/"  # an issuer is compared exactly: kept as given


def test_resource_url_publishes_metadata_naming_the_authorization_server() -> None:
    resource = "https://mcp.example.com/mcp"
    refuses("MCP_RESOURCE_URL must be an https:// URL", **BEARER, MCP_RESOURCE_URL="http://mcp.example.com/mcp")
    refuses("query or fragment", **BEARER, MCP_RESOURCE_URL=resource + "?x=1")
    refuses("MCP_AUTHORIZATION_SERVERS is required", **BEARER, MCP_RESOURCE_URL=resource)
    refuses("MCP_AUTHORIZATION_SERVERS must be an https:// URL", **BEARER, MCP_AUTHORIZATION_SERVERS="ftp://x")
    with_oidc = make_settings(**BEARER, **OIDC, MCP_RESOURCE_URL=resource).protected_resource()
    with_cf = make_settings(
        **CF, **(BEARER | {"MCP_AUTH_MODE": "both"}), MCP_RESOURCE_URL=resource
    ).protected_resource()
    explicit = make_settings(**BEARER, MCP_RESOURCE_URL=resource, MCP_AUTHORIZATION_SERVERS="https://a, https://b")
    assert with_oidc is not None and with_oidc.authorization_servers == ("https://login.example.com/",)
    assert with_cf is not None and with_cf.authorization_servers == ("https://team.cloudflareaccess.com",)
    assert explicit.protected_resource() == type(with_oidc)(resource, ("https://a", "https://b"), name="demo-mcp")
    assert with_oidc.metadata_url == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert make_settings(**BEARER).protected_resource() is None


def test_group_scopes_and_rate_limit_are_checked_at_start() -> None:
    refuses("MCP_CF_GROUP_SCOPES", **CF, **(BEARER | {"MCP_AUTH_MODE": "both"}), MCP_CF_GROUP_SCOPES="admins")
    refuses("not a valid scope", **CF, **(BEARER | {"MCP_AUTH_MODE": "both"}), MCP_CF_GROUP_SCOPES='ops=a"b')
    refuses("MCP_RATE_LIMIT: .*120/minute", **BEARER, MCP_RATE_LIMIT="lots")
    settings = make_settings(**BEARER, MCP_RATE_LIMIT="120/minute", MCP_CF_GROUP_SCOPES="ops=a:read b;dev=c")
    settings.validate_startup()
    assert settings.group_scopes() == {"ops": frozenset({"a:read", "b"}), "dev": frozenset({"c"})}
    limits = settings.rate_limits()
    assert limits.per_identity is not None and limits.per_identity.rate.limit == 120
    assert limits.failed_auth_per_address is not None
    assert make_settings(**BEARER).rate_limits().per_identity is None
