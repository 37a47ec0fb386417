"""Console script ``{{ cookiecutter.project_slug }}`` (see ``{{ cookiecutter.project_slug }} --help``)."""

from mcp_auth.cli import build_cli

from {{ cookiecutter.package_name }}.project import PROJECT

app = build_cli(PROJECT, "{{ cookiecutter.package_name }}.app:create_app")


def main() -> None:
    app()
