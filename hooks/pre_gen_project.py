"""Reject options that would produce a broken project, with one line naming each bad option.

Plain Python before and after cookiecutter renders it: the only template expression is the
string literal CONTEXT, which becomes the context as JSON (Jinja's ``tojson`` escapes ``'`` as
``\\u0027``, so the JSON cannot end the raw ``'''`` string). The rules are the pure function
``problems``, which the template's tests import and call without baking.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

CONTEXT = r'''{{ cookiecutter | tojson }}'''  # noqa: E501  # fmt: skip

RULES = [
    (
        "project_slug",
        r"[a-z][a-z0-9]*(-[a-z0-9]+)*",
        "lowercase letters, digits and single hyphens, starting with a letter (e.g. coda-mcp)",
    ),
    (
        "package_name",
        r"[a-z][a-z0-9_]*",
        "a Python identifier in lowercase letters, digits and underscores (e.g. coda_mcp)",
    ),
    (
        "service_name",
        r"[a-z][a-z0-9_-]*",
        "lowercase letters, digits, '-' and '_', starting with a letter (e.g. coda)",
    ),
    (
        "service_token_env",
        r"[A-Z][A-Z0-9_]*",
        "an environment variable name in uppercase letters, digits and underscores (e.g. CODA_API_TOKEN)",
    ),
    ("upstream_base_url", r"https?://[^\s\"'{}<>\\]+", "an http:// or https:// URL"),
    ("http_port", r"[0-9]{1,5}", "a TCP port number from 1 to 65535"),
    ("python_version", r"3\.(1[1-9])", "a Python version from 3.11 up (e.g. 3.12)"),
    ("author_email", r"[^@\s\"'\\]+@[^@\s\"'\\]+", "an email address"),
]

# Free text lands inside Python and TOML string literals: no quotes or backslashes.
FREE_TEXT = ["project_name", "description", "author_name"]
FREE_TEXT_ALLOWED = "non-empty text without double quotes or backslashes"

RESERVED_PACKAGES = {"mcp_auth", "mcp", "fastmcp", "tests", "migrations"}

# Options with a fixed list of values (the lists in cookiecutter.json; a test keeps them equal).
# Cookiecutter refuses an unknown choice given as extra context, but not one that arrives another
# way (`cookiecutter --replay` with an edited replay file): the hook is the last word.
CHOICES = {
    "license": ["MIT", "Apache-2.0", "Proprietary"],
    "auth_mode": ["both", "cloudflare", "bearer"],
    "token_store": ["env", "postgres", "infisical"],
}


class Problem(NamedTuple):
    option: str
    value: str
    allowed: str

    def __str__(self) -> str:
        return f"ERROR: {self.option} {self.value!r} is invalid: use {self.allowed}."


def problems(context: Mapping[str, Any]) -> list[Problem]:
    """Every option of the rendered cookiecutter context that would break the project (at most one each)."""
    found: dict[str, Problem] = {}

    def reject(option: str, value: str, allowed: str) -> None:
        found.setdefault(option, Problem(option, value, allowed))

    for option, pattern, allowed in RULES:
        value = str(context[option])
        if not re.fullmatch(pattern, value):
            reject(option, value, allowed)
    port = str(context["http_port"])
    if "http_port" not in found and not 1 <= int(port) <= 65535:
        reject("http_port", port, "a TCP port number from 1 to 65535")
    for option in FREE_TEXT:
        value = str(context[option])
        if any(char in value for char in '"\\') or not value.strip():
            reject(option, value, FREE_TEXT_ALLOWED)
    for option, choices in CHOICES.items():
        value = str(context[option])
        if value not in choices:
            reject(option, value, "one of " + ", ".join(choices))
    package = str(context["package_name"])
    if keyword.iskeyword(package) or package in RESERVED_PACKAGES:
        reject("package_name", package, f"a name that is not a Python keyword or one of {sorted(RESERVED_PACKAGES)}")
    return list(found.values())


def main() -> None:
    found = problems(json.loads(CONTEXT))
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        sys.exit(1)


if __name__ == "__main__":
    main()
