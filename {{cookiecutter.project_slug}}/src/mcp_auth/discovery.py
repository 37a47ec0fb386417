"""OAuth 2.0 Protected Resource Metadata (RFC 9728): how an MCP client learns where to get a token.

The MCP authorization specification has a protected server publish this document and point to it
from every 401 (``WWW-Authenticate: Bearer resource_metadata="..."``); a client then reads the
authorization server's own metadata (RFC 8414) and runs OAuth with ``resource`` = this server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    resource: str
    """MCP_RESOURCE_URL: the public URL of /mcp, which is also the audience tokens must carry."""
    authorization_servers: tuple[str, ...]
    name: str = ""

    @property
    def metadata_url(self) -> str:
        """RFC 9728 section 3.1: the well-known path inserted before the resource's path."""
        split = urlsplit(self.resource)
        return f"{split.scheme}://{split.netloc}{WELL_KNOWN}{split.path.rstrip('/')}"

    @property
    def paths(self) -> frozenset[str]:
        """Where this server answers: the path-inserted URL and the bare well-known path."""
        return frozenset({WELL_KNOWN, urlsplit(self.metadata_url).path})

    def document(self, scopes_supported: Iterable[str]) -> dict[str, object]:
        document: dict[str, object] = {
            "resource": self.resource,
            "authorization_servers": list(self.authorization_servers),
            "scopes_supported": list(scopes_supported),
            "bearer_methods_supported": ["header"],
        }
        if self.name:
            document["resource_name"] = self.name
        return document
