"""The template repository's own Python (tests, hooks, scripts) is ruff- and mypy-clean, as CI enforces.

The generated project's code is linted after baking (test_bake.py), never here.
"""

from __future__ import annotations

import pytest
from baked import TEMPLATE, run, tool


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff check", "ruff format", "mypy"],
)
def test_template_repo_is_lint_clean(command: list[str]) -> None:
    result = run([tool(command[0]), *command[1:]], cwd=TEMPLATE, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
