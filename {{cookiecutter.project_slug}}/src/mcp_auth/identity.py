"""Who is calling: the result of authentication, never a secret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AuthMethod = Literal["cloudflare", "bearer", "api_key", "operator", "dev"]
"""``dev``: the local identity of ``<slug> dev`` (no authentication; development only). An
OAuth/OIDC access token is a bearer token (``bearer``); its ``iss`` is in ``claims``."""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    ``subject`` is the stable name used for audit rows and per-caller token keys: the JWT email,
    a Cloudflare service token's ``common_name``, a static bearer token's name, an API key's
    owner email or an OAuth access token's ``sub``. ``email`` is set only when the caller really
    is a person with an address.

    ``scopes``: what the credential carries. Empty means unrestricted (a credential created
    without scopes may call every tool); non-empty limits the caller to the tools whose required
    scopes it holds. ``expires_at`` (Unix seconds) and ``claims`` come from a JWT; claims never
    hold the credential itself.
    """

    subject: str
    method: AuthMethod
    email: str | None = None
    scopes: frozenset[str] = frozenset()
    expires_at: int | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def restricted(self) -> bool:
        """True when the credential carries scopes (and so may call only the tools they allow)."""
        return bool(self.scopes)

    def as_dict(self) -> dict[str, str | None]:
        return {"identity": self.subject, "auth_method": self.method, "email": self.email}
