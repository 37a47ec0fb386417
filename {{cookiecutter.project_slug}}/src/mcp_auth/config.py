"""The one settings object, read from the environment once at start-up and validated.

Validation fails closed: anything that would leave authentication unable to work raises
``ConfigError`` with a one-line message naming the variable and how to fix it. A missing
upstream token is *not* a start-up error (the server answers 503 until it can be resolved).
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit

from mcp_auth.crypto import Keyring, parse_key
from mcp_auth.errors import ConfigError
from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

logger = logging.getLogger("mcp_auth.config")

AuthMode = Literal["cloudflare", "bearer", "both"]
MIN_TOKEN_LENGTH = 32
"""Static bearer tokens shorter than this refuse to start (guessable), unless MCP_ALLOW_SHORT_TOKENS=1."""
StoreName = Literal["env", "postgres", "infisical"]


@dataclass(frozen=True)
class ProjectInfo:
    """What the template baked into a project: names and the defaults of env vars."""

    slug: str
    service_name: str
    service_token_env: str
    default_auth_mode: AuthMode = "both"
    default_token_store: StoreName = "env"
    default_port: int = 8080
    package: str = ""
    """The project's import name; the start-up check that ``mcp_auth`` is its own copy uses it."""


def _split_csv(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(part).strip() for part in value if str(part).strip()]
    raise ValueError("expected a comma-separated list")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class McpAuthSettings(BaseSettings):
    """Runtime configuration (docs/architecture.md lists the variables). Field aliases are the env var names."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what load_settings() passes in: it reads the environment itself (os.environ, or the
        # mapping a test gives it), so settings never pick up the caller's shell behind its back.
        return (init_settings,)

    auth_mode: AuthMode = Field("both", validation_alias="MCP_AUTH_MODE")
    token_store: StoreName = Field("env", validation_alias="MCP_TOKEN_STORE")
    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    encryption_key: SecretStr | None = Field(None, validation_alias="MCP_AUTH_ENCRYPTION_KEY")
    audit_key: SecretStr | None = Field(None, validation_alias="MCP_AUDIT_KEY")
    previous_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="MCP_AUTH_PREVIOUS_KEYS"
    )
    cf_team_domain: str | None = Field(None, validation_alias="CF_ACCESS_TEAM_DOMAIN")
    cf_audiences: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="CF_ACCESS_AUD")
    cf_certs_url: str | None = Field(None, validation_alias="CF_ACCESS_CERTS_URL")
    bearer_tokens: SecretStr | None = Field(None, validation_alias="MCP_BEARER_TOKENS")
    allow_short_tokens: bool = Field(False, validation_alias="MCP_ALLOW_SHORT_TOKENS")
    infisical_host: str = Field("https://app.infisical.com", validation_alias="INFISICAL_HOST")
    infisical_client_id: str | None = Field(None, validation_alias="INFISICAL_CLIENT_ID")
    infisical_client_secret: SecretStr | None = Field(None, validation_alias="INFISICAL_CLIENT_SECRET")
    infisical_api_key: SecretStr | None = Field(None, validation_alias="INFISICAL_API_KEY")
    infisical_project_id: str | None = Field(
        None, validation_alias=AliasChoices("INFISICAL_PROJECT_ID", "INFISICAL_WORKSPACE_ID")
    )
    infisical_environment: str = Field("prod", validation_alias="INFISICAL_ENVIRONMENT")
    infisical_secret_path: str = Field("/", validation_alias="INFISICAL_SECRET_PATH")
    infisical_secret_name: str | None = Field(None, validation_alias="INFISICAL_SECRET_NAME")
    token_cache_ttl: float = Field(300.0, ge=0, validation_alias="MCP_TOKEN_CACHE_TTL")
    host: str = Field("127.0.0.1", validation_alias="MCP_HOST")
    port: int | None = Field(None, ge=1, le=65535, validation_alias="MCP_PORT")
    operator_email: str | None = Field(None, validation_alias="MCP_OPERATOR_EMAIL")
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="MCP_METRICS_PORT")
    otel_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    # Filled from ProjectInfo by load_settings(), not from the environment.
    slug: str = Field("mcp-server", exclude=True)
    package: str = Field("", exclude=True)
    service_name: str = Field("service", exclude=True)
    service_token_env: str = Field("SERVICE_API_TOKEN", exclude=True)
    service_token: SecretStr | None = Field(None, exclude=True)
    _static_tokens: dict[str, str] | None = PrivateAttr(None)

    @field_validator("previous_keys", "cf_audiences", mode="before")
    @classmethod
    def _csv(cls, value: object) -> list[str]:
        return _split_csv(value)

    @field_validator("cf_team_domain", mode="before")
    @classmethod
    def _strip_slash(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().rstrip("/") or None
        return value

    @field_validator(
        "database_url",
        "encryption_key",
        "audit_key",
        "cf_certs_url",
        "bearer_tokens",
        "infisical_client_id",
        "infisical_client_secret",
        "infisical_api_key",
        "infisical_project_id",
        "infisical_secret_name",
        "operator_email",
        "metrics_port",
        "otel_endpoint",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose files and .env templates pass "VAR=" for unset values.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "port",
        "host",
        "allow_short_tokens",
        "token_cache_ttl",
        "infisical_host",
        "infisical_environment",
        "infisical_secret_path",
        mode="before",
    )
    @classmethod
    def _blank_is_default(cls, value: object, info: ValidationInfo) -> object:
        # "VAR=" in a .env file means "use the default", not "the empty string".
        if isinstance(value, str) and not value.strip():
            field = cls.model_fields[info.field_name or ""]
            return field.get_default(call_default_factory=True)
        return value

    # ----- derived values -------------------------------------------------------------------

    @property
    def certs_url(self) -> str | None:
        if self.cf_certs_url:
            return self.cf_certs_url
        if self.cf_team_domain:
            return f"{self.cf_team_domain}/cdn-cgi/access/certs"
        return None

    @property
    def operator(self) -> str:
        if self.operator_email:
            return self.operator_email
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = "operator"
        return f"{user}@{socket.gethostname()}"

    def static_bearer_tokens(self) -> dict[str, str]:
        """MCP_BEARER_TOKENS (``name=token,...``) as {token: name}; parsed (and warned about) once."""
        if self._static_tokens is None:
            self._static_tokens = self._parse_bearer_tokens()
        return dict(self._static_tokens)

    def _parse_bearer_tokens(self) -> dict[str, str]:
        if self.bearer_tokens is None:
            return {}
        tokens: dict[str, str] = {}
        for index, entry in enumerate(_split_csv(self.bearer_tokens.get_secret_value()), 1):
            name, sep, token = entry.partition("=")
            name, token = name.strip(), token.strip()
            if not sep or not name or not token:
                raise ConfigError(
                    f"MCP_BEARER_TOKENS entry {index} is not name=token (use comma-separated name=token pairs)"
                )
            if len(token) < MIN_TOKEN_LENGTH:
                if not self.allow_short_tokens:
                    raise ConfigError(
                        f"MCP_BEARER_TOKENS token for {name!r} is shorter than {MIN_TOKEN_LENGTH} characters: use a "
                        "long random one (python -c 'import secrets; print(secrets.token_urlsafe(32))'), or set "
                        "MCP_ALLOW_SHORT_TOKENS=1 for local development"
                    )
                logger.warning(
                    "MCP_BEARER_TOKENS token for %r is shorter than %d characters (allowed by MCP_ALLOW_SHORT_TOKENS; "
                    "development only)",
                    name,
                    MIN_TOKEN_LENGTH,
                )
            tokens[token] = name
        return tokens

    @property
    def uses_database(self) -> bool:
        return self.database_url is not None

    def keyring(self) -> Keyring:
        """The encryption keyring (current + previous keys); ConfigError when a key is missing or malformed."""
        return Keyring.from_base64(
            self.encryption_key.get_secret_value() if self.encryption_key else None,
            [secret.get_secret_value() for secret in self.previous_keys],
            slug=self.slug,
        )

    def audit_key_bytes(self) -> bytes | None:
        """MCP_AUDIT_KEY decoded (it keys the audit chain's HMAC); None when unset."""
        if self.audit_key is None:
            return None
        return parse_key(self.audit_key.get_secret_value(), name="MCP_AUDIT_KEY", slug=self.slug)

    def validate_startup(self) -> None:
        """Fail closed on configuration that cannot authenticate anybody (ConfigError naming the variable)."""
        for check in _STARTUP_CHECKS:
            check(self)


def _check_cloudflare(settings: McpAuthSettings) -> None:
    if settings.auth_mode not in ("cloudflare", "both"):
        return
    mode = settings.auth_mode
    if not settings.cf_team_domain:
        raise ConfigError(
            f"CF_ACCESS_TEAM_DOMAIN is required when MCP_AUTH_MODE={mode} (e.g. https://<team>.cloudflareaccess.com)"
        )
    team = _split_url(settings.cf_team_domain, "CF_ACCESS_TEAM_DOMAIN")
    if team.scheme != "https" and not _is_loopback(team.hostname):
        raise ConfigError("CF_ACCESS_TEAM_DOMAIN must be an https:// URL (https://<team>.cloudflareaccess.com)")
    if not settings.cf_audiences:
        raise ConfigError(
            f"CF_ACCESS_AUD is required when MCP_AUTH_MODE={mode} "
            "(the Application Audience tag from the Access application's overview)"
        )
    certs = _split_url(settings.certs_url or "", "CF_ACCESS_CERTS_URL")
    if certs.scheme != "https" and not (certs.scheme == "http" and _is_loopback(certs.hostname)):
        raise ConfigError("CF_ACCESS_CERTS_URL must be an https:// URL (http only on loopback)")


def _split_url(url: str, name: str) -> SplitResult:
    try:
        split = urlsplit(url)
        split.hostname  # noqa: B018  (parses the host: a malformed IPv6 literal raises here)
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL (e.g. https://<team>.cloudflareaccess.com)") from None
    return split


def _check_bearer(settings: McpAuthSettings) -> None:
    bearer = settings.static_bearer_tokens()  # raises on a malformed entry in every mode
    if settings.auth_mode == "bearer" and not bearer and not settings.uses_database:
        raise ConfigError(
            "MCP_BEARER_TOKENS is required when MCP_AUTH_MODE=bearer and no DATABASE_URL is set "
            "(set name=token pairs, or DATABASE_URL to use API keys)"
        )


def _check_postgres_store(settings: McpAuthSettings) -> None:
    if settings.token_store != "postgres":
        return
    if not settings.uses_database:
        raise ConfigError(
            "DATABASE_URL is required when MCP_TOKEN_STORE=postgres (e.g. postgresql://user:password@host:5432/db)"
        )
    if settings.encryption_key is None:
        raise ConfigError(
            "MCP_AUTH_ENCRYPTION_KEY is required when MCP_TOKEN_STORE=postgres (generate one with the 'keygen' command)"
        )


def _check_infisical_store(settings: McpAuthSettings) -> None:
    if settings.token_store != "infisical":
        return
    if not settings.infisical_project_id:
        raise ConfigError("INFISICAL_PROJECT_ID is required when MCP_TOKEN_STORE=infisical")
    if not (settings.infisical_client_id and settings.infisical_client_secret) and not settings.infisical_api_key:
        raise ConfigError(
            "INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET (universal auth) or INFISICAL_API_KEY "
            "is required when MCP_TOKEN_STORE=infisical"
        )


def _check_encryption_keys(settings: McpAuthSettings) -> None:
    if settings.encryption_key is not None or settings.previous_keys:
        settings.keyring()  # raises ConfigError on a malformed key
    settings.audit_key_bytes()  # likewise for MCP_AUDIT_KEY


def _check_observability(settings: McpAuthSettings) -> None:
    if settings.metrics_port is not None and settings.metrics_port == settings.port:
        raise ConfigError(
            f"MCP_METRICS_PORT must differ from MCP_PORT ({settings.port}): /metrics is served on a port of its own"
        )
    if settings.otel_endpoint is not None and urlsplit(settings.otel_endpoint).scheme not in ("http", "https"):
        raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s):// URL (e.g. http://otel-collector:4318)")


_STARTUP_CHECKS: tuple[Callable[[McpAuthSettings], None], ...] = (
    _check_cloudflare,
    _check_bearer,
    _check_postgres_store,
    _check_infisical_store,
    _check_encryption_keys,
    _check_observability,
)


def load_settings(project: ProjectInfo, environ: dict[str, str] | None = None) -> McpAuthSettings:
    """Read the environment once, apply the project's defaults, validate the values' shapes.

    ``validate_startup()`` is separate so CLI commands that do not authenticate anybody
    (``keygen``, ``tokens``) can run with a partial configuration.
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("MCP_AUTH_MODE", project.default_auth_mode)
    env.setdefault("MCP_TOKEN_STORE", project.default_token_store)
    for name in ("MCP_AUTH_MODE", "MCP_TOKEN_STORE"):
        if not env[name].strip():
            env[name] = project.default_auth_mode if name == "MCP_AUTH_MODE" else project.default_token_store
    token = env.get(project.service_token_env) or None
    try:
        settings = McpAuthSettings.model_validate(
            {
                **{k: v for k, v in env.items() if k in _ENV_NAMES},
                "slug": project.slug,
                "package": project.package,
                "service_name": project.service_name,
                "service_token_env": project.service_token_env,
                "service_token": token,
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"][0] if error["loc"] else ""
        name = _FIELD_TO_ENV.get(str(loc), str(loc))
        raise ConfigError(f"{name}: {error['msg']}") from None
    if settings.port is None:
        settings.port = project.default_port
    return settings


def _env_names() -> tuple[set[str], dict[str, str]]:
    names: set[str] = set()
    field_to_env: dict[str, str] = {}
    for field_name, field in McpAuthSettings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
        for choice in choices:
            if isinstance(choice, str):
                names.add(choice)
                field_to_env.setdefault(field_name, choice)
                field_to_env[choice] = choice
    return names, field_to_env


_ENV_NAMES, _FIELD_TO_ENV = _env_names()
