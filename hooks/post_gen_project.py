"""After generation: remove only what an option truly excludes; no network, no git.

Every project keeps all token stores, the migrations and src/mcp_auth (switching store is
configuration), so today nothing is excluded; this prints the next steps.

Plain Python before and after rendering: the context arrives as JSON in the string CONTEXT
(see pre_gen_project.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CONTEXT = r'''{{ cookiecutter | tojson }}'''  # noqa: E501  # fmt: skip


def next_steps(context: Mapping[str, Any]) -> str:
    slug = context["project_slug"]
    return (
        f"\nCreated {slug}. Next:\n"
        f"  cd {slug} && uv sync && uv run pytest\n"
        "  see README.md for the configuration table and how to add a tool.\n"
    )


def main() -> None:
    print(next_steps(json.loads(CONTEXT)))


if __name__ == "__main__":
    main()
