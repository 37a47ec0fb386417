"""Credential verifiers: Cloudflare Access JWTs, static bearer tokens, database API keys."""

from mcp_auth.verifiers.base import Verifier
from mcp_auth.verifiers.bearer import StaticBearerVerifier
from mcp_auth.verifiers.cloudflare import CloudflareAccessVerifier
from mcp_auth.verifiers.jwks import JwksCache

__all__ = ["CloudflareAccessVerifier", "JwksCache", "StaticBearerVerifier", "Verifier"]
