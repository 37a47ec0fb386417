"""Regenerate the generated project's uv.lock after changing its dependencies.

Bakes the default project, runs ``uv lock`` in it, and writes the lock back with the project's
name templated, so every fresh bake passes ``uv lock --check`` (and ``uv sync --locked``).
Usage: uv run python scripts/update_lock.py [--upgrade]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
LOCK = TEMPLATE / "{{cookiecutter.project_slug}}" / "uv.lock"
DEFAULT_SLUG = "coda-mcp"


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        project = Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=out))
        assert project.name == DEFAULT_SLUG
        if LOCK.exists() and "--upgrade" not in sys.argv:
            # Start from the current lock so unrelated pins do not move.
            (project / "uv.lock").write_text(LOCK.read_text().replace("{{ cookiecutter.project_slug }}", DEFAULT_SLUG))
        subprocess.run(["uv", "lock", *(["--upgrade"] if "--upgrade" in sys.argv else [])], cwd=project, check=True)
        text = (project / "uv.lock").read_text()
    marker = f'name = "{DEFAULT_SLUG}"'
    assert text.count(marker) == 1, "the project name must appear exactly once in the lock"
    LOCK.write_text(text.replace(marker, 'name = "{{ cookiecutter.project_slug }}"'))
    print(f"wrote {LOCK.relative_to(TEMPLATE)}")


if __name__ == "__main__":
    main()
