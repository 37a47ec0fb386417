"""Credential verifiers: Cloudflare Access JWTs, OAuth/OIDC access tokens, static bearer tokens,
database API keys."""

from mcp_auth.verifiers.base import Verifier
from mcp_auth.verifiers.bearer import StaticBearerVerifier
from mcp_auth.verifiers.cloudflare import CloudflareAccessVerifier, parse_group_scopes
from mcp_auth.verifiers.jwks import JwksCache
from mcp_auth.verifiers.oidc import OidcVerifier

__all__ = [
    "CloudflareAccessVerifier",
    "JwksCache",
    "OidcVerifier",
    "StaticBearerVerifier",
    "Verifier",
    "parse_group_scopes",
]
