"""What the template baked into this project. Runtime settings come from the environment."""

from mcp_auth import api
from mcp_auth.config import ProjectInfo

PROJECT = ProjectInfo(
    slug="{{ cookiecutter.project_slug }}",
    service_name="{{ cookiecutter.service_name }}",
    service_token_env="{{ cookiecutter.service_token_env }}",
    default_auth_mode="{{ cookiecutter.auth_mode }}",
    default_token_store="{{ cookiecutter.token_store }}",
    default_port={{ cookiecutter.http_port }},
)
PROJECT_NAME = "{{ cookiecutter.project_name }}"
UPSTREAM_BASE_URL = "{{ cookiecutter.upstream_base_url }}"

# mcp_auth.get_token() & co. (scripts, tools) then use this project's service and variable names.
api.configure(PROJECT)
