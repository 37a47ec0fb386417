"""After generation: remove only what an option truly excludes; no network, no git.

Every project keeps all token stores, the migrations and src/mcp_auth (switching store is
configuration), so today nothing is excluded; this prints the next steps.
"""

print(
    "\nCreated {{ cookiecutter.project_slug }}. Next:\n"
    "  cd {{ cookiecutter.project_slug }} && uv sync && uv run pytest\n"
    "  see README.md for the configuration table and how to add a tool.\n"
)
