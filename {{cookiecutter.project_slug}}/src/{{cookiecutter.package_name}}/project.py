"""What the template baked into this project: the only module of the package that cookiecutter
renders. Runtime settings come from the environment (see README.md)."""

from mcp_auth import ProjectInfo

PROJECT = ProjectInfo(
    slug="{{ cookiecutter.project_slug }}",
    service_name="{{ cookiecutter.service_name }}",
    service_token_env="{{ cookiecutter.service_token_env }}",
    default_auth_mode="{{ cookiecutter.auth_mode }}",
    default_token_store="{{ cookiecutter.token_store }}",
    default_port={{ cookiecutter.http_port }},
    package=__name__.rpartition(".")[0],
)
PROJECT_NAME = "{{ cookiecutter.project_name }}"
DESCRIPTION = "{{ cookiecutter.description }}"
UPSTREAM_BASE_URL = "{{ cookiecutter.upstream_base_url }}"
