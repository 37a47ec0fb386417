"""OAuth scopes as credentials carry them: RFC 6749 section 3.3 scope tokens."""

from __future__ import annotations

import re
from collections.abc import Iterable

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
"""scope-token = 1*( %x21 / %x23-5B / %x5D-7E ): printable ASCII without space, quote or backslash."""


def is_scope(value: str) -> bool:
    return _SCOPE_TOKEN.fullmatch(value) is not None


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """The scopes named in ``values`` (each may hold several, space-separated); ValueError names
    the first that is not a scope token."""
    scopes: set[str] = set()
    for value in values:
        for scope in value.split():
            if not is_scope(scope):
                raise ValueError(f"{scope!r} is not a valid scope (printable ASCII without quotes or backslashes)")
            scopes.add(scope)
    return frozenset(scopes)
