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
