"""Every option combination bakes into a complete, lint-clean project; bad options are refused."""

from __future__ import annotations

import filecmp
import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from baked import COMBINATIONS, TEMPLATE, Bake, BakedProject

EXPECTED_FILES = [
    "pyproject.toml",
    "uv.lock",
    "README.md",
    "Dockerfile",
    "docker-compose.yml",
    ".env.example",
    ".github/workflows/ci.yml",
    ".github/workflows/image.yml",
    "renovate.json",
    "LICENSE",
    "src/mcp_auth/__init__.py",
    "src/mcp_auth/asgi/app.py",
    "src/mcp_auth/asgi/authentication.py",
    "src/mcp_auth/asgi/token_resolution.py",
    "src/mcp_auth/tokens.py",
    "src/mcp_auth/db/engine.py",
    "src/mcp_auth/config.py",
    "src/mcp_auth/crypto.py",
    "src/mcp_auth/audit.py",
    "src/mcp_auth/verifiers/cloudflare.py",
    "src/mcp_auth/verifiers/bearer.py",
    "src/mcp_auth/stores/env.py",
    "src/mcp_auth/stores/database.py",
    "src/mcp_auth/stores/infisical.py",
    "migrations/env.py",
    "tests/mcp_auth/test_http.py",
]
# The only files cookiecutter renders (relative to the project root); everything else, the
# user's package included, is the same text in every project.
RENDERED = {
    ".env.example",
    "Dockerfile",
    "LICENSE",
    "README.md",
    "docker-compose.yml",
    "pyproject.toml",
    "uv.lock",
    "src/{{cookiecutter.package_name}}/project.py",
    "justfile",
    # Kubernetes: the slug, image and port where kustomize cannot express them.
    "deploy/kubernetes/base/configmap.yaml",
    "deploy/kubernetes/base/deployment.yaml",
    "deploy/kubernetes/base/job-migrate.yaml",
    "deploy/kubernetes/base/service.yaml",
    "deploy/kubernetes/overlays/example/kustomization.yaml",
    "deploy/kubernetes/overlays/example/namespace.yaml",
}
JINJA = re.compile(r"\{\{-?\s*cookiecutter|\{%")
LEFTOVER = re.compile(r"\{\{\s*cookiecutter|\{%-?\s*(raw|endraw|if|endif|for|endfor|set)\b|cookiecutter\.")


@pytest.mark.parametrize(("auth_mode", "token_store"), COMBINATIONS)
def test_every_combination_bakes_complete_and_lint_clean(
    bake: Bake, installed_bin: Path, auth_mode: str, token_store: str
) -> None:
    project = bake(auth_mode=auth_mode, token_store=token_store)
    package = project.package
    for relative in [
        *EXPECTED_FILES,
        f"src/{package}/app.py",
        f"src/{package}/cli.py",
        f"src/{package}/tools/whoami.py",
        f"src/{package}/tools/upstream.py",
    ]:
        assert project.has_file(relative), relative
    for path in project.files():
        text = path.read_text(errors="ignore")
        match = LEFTOVER.search(text)
        assert match is None, f"{path.relative_to(project.path)} has leftover template syntax {match.group(0)!r}"
    project_py = project.read(f"src/{package}/project.py")
    assert f'default_auth_mode="{auth_mode}"' in project_py
    assert f'default_token_store="{token_store}"' in project_py
    ruff = str(installed_bin / "ruff")  # the project's locked ruff, as its CI runs it
    for command in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        result = subprocess.run(command, cwd=project.path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    project.typecheck(installed_bin / "mypy")  # strict mypy: raises with its report on any error


def test_shared_module_is_byte_identical_to_the_template(bake: Bake) -> None:
    """src/mcp_auth, its tests and the migrations are copied verbatim (cruft updates stay clean)."""
    project: BakedProject = bake(project_name="Acme Widgets", service_name="widgets", auth_mode="bearer")
    for shared in ("src/mcp_auth", "tests/mcp_auth", "migrations"):
        source = TEMPLATE / "{{cookiecutter.project_slug}}" / shared
        for path in source.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                relative = path.relative_to(source)
                assert filecmp.cmp(path, project.path / shared / relative, shallow=False), f"{shared}/{relative}"


def test_custom_names_flow_into_the_project(bake: Bake) -> None:
    project = bake(project_name="GitHub MCP", service_name="github", http_port="9090")
    assert project.slug == "github-mcp" and project.package == "github_mcp"
    assert project.has_file("src/github_mcp/app.py")
    assert 'service_token_env="GITHUB_API_TOKEN"' in project.read("src/github_mcp/project.py")
    assert "default_port=9090" in project.read("src/github_mcp/project.py")
    assert 'github-mcp = "github_mcp.cli:main"' in project.read("pyproject.toml")
    assert 'name = "github-mcp"' in project.read("uv.lock")


# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt: the full text, not a summary.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


@pytest.mark.parametrize(
    ("license", "spdx"),
    [("MIT", "MIT"), ("Apache-2.0", "Apache-2.0"), ("Proprietary", "LicenseRef-Proprietary")],
)
def test_license_option(bake: Bake, license: str, spdx: str) -> None:
    project = bake(license=license, author_name="Zoë O'Brien")
    year = str(project.context["__year"])
    assert re.fullmatch(r"20\d\d", year), year
    text = project.read("LICENSE")
    assert f'\nlicense = "{spdx}"\n' in project.read("pyproject.toml")
    assert text.endswith("\n") and not text.endswith("\n\n") and "{" not in text
    if license == "MIT":
        assert text.startswith(f"MIT License\n\nCopyright (c) {year} Zoë O'Brien\n\nPermission is hereby granted")
        assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    elif license == "Apache-2.0":
        assert hashlib.sha256(text.encode()).hexdigest() == APACHE_2_SHA256, "the Apache License 2.0, verbatim"
    else:
        assert text.startswith(f"Copyright (c) {year} Zoë O'Brien. All rights reserved.\n")
        assert "Permission is hereby granted" not in text and "Apache" not in text


def test_unknown_license_is_refused(cookies: Any) -> None:
    """Cookiecutter refuses an unknown choice itself; the pre-gen hook covers replayed contexts."""
    result = cookies.bake(extra_context={"license": "GPL-3.0"}, template=str(TEMPLATE))
    assert result.exit_code != 0 and "license" in str(result.exception)
    assert result.project_path is None or not Path(result.project_path).exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("project_slug", "Bad Slug"),
        ("project_slug", "1mcp"),
        ("package_name", "coda-mcp"),
        ("package_name", "class"),
        ("package_name", "mcp_auth"),
        ("service_token_env", "coda-token"),
        ("service_name", "Coda API"),
        ("http_port", "80800"),
        ("python_version", "3.9"),
        ("upstream_base_url", "ftp://example.com"),
        ("description", 'Talks to the "Coda" API'),
        ("author_name", "Back\\slash"),
    ],
)
def test_invalid_option_is_refused_with_a_message_naming_it(
    cookies: Any, capfd: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    result = cookies.bake(extra_context={option: value}, template=str(TEMPLATE))
    assert result.exit_code != 0
    assert result.project_path is None or not Path(result.project_path).exists()
    err = capfd.readouterr().err
    assert f"ERROR: {option} {value!r} is invalid" in err


def test_jinja_touches_only_the_files_that_need_it() -> None:
    root = TEMPLATE / "{{cookiecutter.project_slug}}"
    rendered = {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and JINJA.search(path.read_text(errors="ignore"))
    }
    assert rendered == RENDERED
