"""Who is calling: the result of authentication, never a secret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AuthMethod = Literal["cloudflare", "bearer", "api_key", "operator", "dev"]
"""``dev``: the local identity of ``<slug> dev`` (no authentication; development only)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    ``subject`` is the stable name used for audit rows and per-caller token keys: the JWT email,
    a Cloudflare service token's ``common_name``, a static bearer token's name or an API key's
    owner email. ``email`` is set only when the caller really is a person with an address.
    """

    subject: str
    method: AuthMethod
    email: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"identity": self.subject, "auth_method": self.method, "email": self.email}
