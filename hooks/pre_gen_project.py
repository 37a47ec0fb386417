"""Reject options that would produce a broken project, with one line naming the option."""

import keyword
import re
import sys

OPTIONS = {
    "project_slug": "{{ cookiecutter.project_slug }}",
    "package_name": "{{ cookiecutter.package_name }}",
    "service_name": "{{ cookiecutter.service_name }}",
    "service_token_env": "{{ cookiecutter.service_token_env }}",
    "upstream_base_url": "{{ cookiecutter.upstream_base_url }}",
    "http_port": "{{ cookiecutter.http_port }}",
    "python_version": "{{ cookiecutter.python_version }}",
    "author_email": "{{ cookiecutter.author_email }}",
}

# Free text lands inside Python and TOML string literals: no quotes or backslashes.
FREE_TEXT = {
    "project_name": {{ cookiecutter.project_name | tojson }},
    "description": {{ cookiecutter.description | tojson }},
    "author_name": {{ cookiecutter.author_name | tojson }},
}

RULES = [
    ("project_slug", r"[a-z][a-z0-9]*(-[a-z0-9]+)*",
     "lowercase letters, digits and single hyphens, starting with a letter (e.g. coda-mcp)"),
    ("package_name", r"[a-z][a-z0-9_]*",
     "a Python identifier in lowercase letters, digits and underscores (e.g. coda_mcp)"),
    ("service_name", r"[a-z][a-z0-9_-]*",
     "lowercase letters, digits, '-' and '_', starting with a letter (e.g. coda)"),
    ("service_token_env", r"[A-Z][A-Z0-9_]*",
     "an environment variable name in uppercase letters, digits and underscores (e.g. CODA_API_TOKEN)"),
    ("upstream_base_url", r"https?://[^\s\"'{}<>\\]+", "an http:// or https:// URL"),
    ("http_port", r"[0-9]{1,5}", "a TCP port number from 1 to 65535"),
    ("python_version", r"3\.(1[1-9])", "a Python version from 3.11 up (e.g. 3.12)"),
    ("author_email", r"[^@\s\"'\\]+@[^@\s\"'\\]+", "an email address"),
]

RESERVED_PACKAGES = {"mcp_auth", "mcp", "fastmcp", "tests", "migrations"}


def fail(option: str, value: str, allowed: str) -> None:
    print(f"ERROR: {option} {value!r} is invalid: use {allowed}.", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    for option, pattern, allowed in RULES:
        if not re.fullmatch(pattern, OPTIONS[option]):
            fail(option, OPTIONS[option], allowed)
    if not 1 <= int(OPTIONS["http_port"]) <= 65535:
        fail("http_port", OPTIONS["http_port"], "a TCP port number from 1 to 65535")
    for option, value in FREE_TEXT.items():
        if any(char in value for char in "\"\\") or not value.strip():
            fail(option, value, "non-empty text without double quotes or backslashes")
    package = OPTIONS["package_name"]
    if keyword.iskeyword(package) or package in RESERVED_PACKAGES:
        fail("package_name", package, f"a name that is not a Python keyword or one of {sorted(RESERVED_PACKAGES)}")


main()
