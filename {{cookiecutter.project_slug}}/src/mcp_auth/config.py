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
from mcp_auth.discovery import ProtectedResource
from mcp_auth.errors import ConfigError
from mcp_auth.rate_limit import RateLimits
from mcp_auth.scopes import parse_scopes
from mcp_auth.verifiers.cloudflare import parse_group_scopes
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


def _token_label(label: str, index: int) -> tuple[str, frozenset[str]]:
    """``name`` or ``name[scope scope]`` of an MCP_BEARER_TOKENS entry."""
    name, bracket, rest = label.strip().partition("[")
    if not bracket:
        return name.strip(), frozenset()
    if not rest.endswith("]"):
        raise ConfigError(f"MCP_BEARER_TOKENS entry {index}: close the scope list with ']' (name[scope scope]=token)")
    try:
        return name.strip(), parse_scopes([rest[:-1]])
    except ValueError as exc:
        raise ConfigError(f"MCP_BEARER_TOKENS entry {index}: {exc}") from None


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
    resource_url: str | None = Field(None, validation_alias="MCP_RESOURCE_URL")
    authorization_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="MCP_AUTHORIZATION_SERVERS"
    )
    oidc_issuer: str | None = Field(None, validation_alias="MCP_OIDC_ISSUER")
    oidc_audience: str | None = Field(None, validation_alias="MCP_OIDC_AUDIENCE")
    cf_group_scopes: str | None = Field(None, validation_alias="MCP_CF_GROUP_SCOPES")
    rate_limit: str | None = Field(None, validation_alias="MCP_RATE_LIMIT")

    # Filled from ProjectInfo by load_settings(), not from the environment.
    slug: str = Field("mcp-server", exclude=True)
    package: str = Field("", exclude=True)
    service_name: str = Field("service", exclude=True)
    service_token_env: str = Field("SERVICE_API_TOKEN", exclude=True)
    service_token: SecretStr | None = Field(None, exclude=True)
    _static_tokens: dict[str, tuple[str, frozenset[str]]] | None = PrivateAttr(None)

    @field_validator("previous_keys", "cf_audiences", "authorization_servers", mode="before")
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
        "resource_url",
        "oidc_issuer",
        "oidc_audience",
        "cf_group_scopes",
        "rate_limit",
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
        """MCP_BEARER_TOKENS (``name=token`` or ``name[scope scope]=token``, comma-separated) as
        {token: name}; parsed (and warned about) once."""
        return {token: name for token, (name, _) in self._parsed_bearer_tokens().items()}

    def static_bearer_scopes(self) -> dict[str, frozenset[str]]:
        """{name: scopes} of the static tokens that carry scopes (the others are unrestricted)."""
        return {name: scopes for name, scopes in self._parsed_bearer_tokens().values() if scopes}

    def _parsed_bearer_tokens(self) -> dict[str, tuple[str, frozenset[str]]]:
        if self._static_tokens is None:
            self._static_tokens = self._parse_bearer_tokens()
        return self._static_tokens

    def _parse_bearer_tokens(self) -> dict[str, tuple[str, frozenset[str]]]:
        if self.bearer_tokens is None:
            return {}
        tokens: dict[str, tuple[str, frozenset[str]]] = {}
        for index, entry in enumerate(_split_csv(self.bearer_tokens.get_secret_value()), 1):
            label, sep, token = entry.partition("=")
            token = token.strip()
            name, scopes = _token_label(label, index)
            if not sep or not name or not token:
                raise ConfigError(
                    f"MCP_BEARER_TOKENS entry {index} is not name=token (use comma-separated name=token pairs, "
                    "or name[scope scope]=token)"
                )
            self._check_token_length(name, token)
            tokens[token] = (name, scopes)
        return tokens

    def _check_token_length(self, name: str, token: str) -> None:
        if len(token) >= MIN_TOKEN_LENGTH:
            return
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

    def group_scopes(self) -> dict[str, frozenset[str]]:
        """MCP_CF_GROUP_SCOPES (``group=scope scope;group2=scope``) parsed; ConfigError when malformed."""
        if self.cf_group_scopes is None:
            return {}
        try:
            return parse_group_scopes(self.cf_group_scopes)
        except ValueError as exc:
            raise ConfigError(f"MCP_CF_GROUP_SCOPES: {exc}") from None

    def rate_limits(self) -> RateLimits:
        """MCP_RATE_LIMIT parsed; ConfigError when malformed."""
        try:
            return RateLimits.from_setting(self.rate_limit)
        except ValueError as exc:
            raise ConfigError(f"MCP_RATE_LIMIT: {exc}") from None

    def protected_resource(self) -> ProtectedResource | None:
        """The RFC 9728 metadata this server publishes; None when MCP_RESOURCE_URL is unset."""
        if self.resource_url is None:
            return None
        servers = self.authorization_servers
        if not servers:
            fallback = self.oidc_issuer or (self.cf_team_domain if self.auth_mode != "bearer" else None)
            servers = [fallback] if fallback else []
        return ProtectedResource(self.resource_url, tuple(servers), name=self.slug)

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


def _split_url(url: str, name: str, example: str = "https://<team>.cloudflareaccess.com") -> SplitResult:
    try:
        split = urlsplit(url)
        split.hostname  # noqa: B018  (parses the host: a malformed IPv6 literal raises here)
    except ValueError:
        raise ConfigError(f"{name} is not a valid URL (e.g. {example})") from None
    return split


def _check_bearer(settings: McpAuthSettings) -> None:
    bearer = settings.static_bearer_tokens()  # raises on a malformed entry in every mode
    oidc = settings.oidc_issuer is not None
    if settings.auth_mode == "bearer" and not bearer and not settings.uses_database and not oidc:
        raise ConfigError(
            "MCP_BEARER_TOKENS is required when MCP_AUTH_MODE=bearer and no DATABASE_URL or MCP_OIDC_ISSUER is set "
            "(set name=token pairs, DATABASE_URL to use API keys, or MCP_OIDC_ISSUER for OAuth access tokens)"
        )


def _check_oidc(settings: McpAuthSettings) -> None:
    issuer, audience = settings.oidc_issuer, settings.oidc_audience
    if issuer is None and audience is None:
        return
    if issuer is None or audience is None:
        missing = "MCP_OIDC_ISSUER" if issuer is None else "MCP_OIDC_AUDIENCE"
        raise ConfigError(
            f"{missing} is required with "
            f"{'MCP_OIDC_AUDIENCE' if issuer is None else 'MCP_OIDC_ISSUER'} (OAuth access tokens need both: "
            "the issuer URL and the audience the tokens carry, normally MCP_RESOURCE_URL)"
        )
    if settings.auth_mode == "cloudflare":
        raise ConfigError(
            "MCP_OIDC_ISSUER needs MCP_AUTH_MODE=bearer or both (OAuth access tokens are bearer tokens, "
            "which MCP_AUTH_MODE=cloudflare refuses)"
        )
    _require_https(issuer, "MCP_OIDC_ISSUER", "https://login.example.com")


def _check_discovery(settings: McpAuthSettings) -> None:
    for server in settings.authorization_servers:
        _require_https(server, "MCP_AUTHORIZATION_SERVERS", "https://login.example.com")
    if settings.resource_url is None:
        return
    split = _require_https(settings.resource_url, "MCP_RESOURCE_URL", "https://mcp.example.com/mcp")
    if split.query or split.fragment:
        raise ConfigError("MCP_RESOURCE_URL must not have a query or fragment (e.g. https://mcp.example.com/mcp)")
    resource = settings.protected_resource()
    if resource is not None and not resource.authorization_servers:
        raise ConfigError(
            "MCP_AUTHORIZATION_SERVERS is required with MCP_RESOURCE_URL when neither MCP_OIDC_ISSUER nor a "
            "Cloudflare team domain names the authorization server (clients look it up in the metadata)"
        )


def _check_scope_settings(settings: McpAuthSettings) -> None:
    settings.group_scopes()
    settings.rate_limits()


def _require_https(url: str, name: str, example: str) -> SplitResult:
    split = _split_url(url, name, example)
    if not split.hostname or not (split.scheme == "https" or (split.scheme == "http" and _is_loopback(split.hostname))):
        raise ConfigError(f"{name} must be an https:// URL (http only on loopback), e.g. {example}")
    return split


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
    _check_oidc,
    _check_discovery,
    _check_scope_settings,
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
