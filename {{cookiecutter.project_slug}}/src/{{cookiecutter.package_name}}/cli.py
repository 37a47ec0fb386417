"""The console script (``<project slug> --help``): serve, keygen and the operator commands."""

from mcp_auth.cli import build_cli

from .project import PROJECT

app = build_cli(PROJECT, f"{PROJECT.package}.app:create_app")


def main() -> None:
    app()
