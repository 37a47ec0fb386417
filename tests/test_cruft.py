"""The update story, end to end and offline: cruft create -> user work -> template v2 -> cruft update.

The template is copied into a throw-away git repository (cruft clones templates with git), so the
test controls exactly what v1 and v2 are. Nothing is installed; the generated suite after an
update is run elsewhere. cruft runs in-process (its CLI spends seconds importing per call); git,
which cruft also calls, runs without the user's global config (no signing, hooks or templates)
and with a fixed identity.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import cruft
import pytest
from baked import TEMPLATE, BakedProject, check_installed_project, run

TEMPLATE_PARTS = ["cookiecutter.json", "hooks", "{{cookiecutter.project_slug}}"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".env")
SLUG = "coda-mcp"
PACKAGE = "coda_mcp"
USER_TOOL = f"src/{PACKAGE}/tools/release_notes.py"
USER_TOOL_TEXT = (
    '"""A tool the user wrote after generating the project."""\n\n\n'
    'async def release_notes() -> str:\n    return "v1"\n'
)
HEALTHCHECK = re.compile(r"--interval=\d+s")


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set for this process too: cruft runs git in subprocesses that inherit os.environ."""
    home = tmp_path / "home"
    home.mkdir()
    for name in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(name)
    values = {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Template Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Template Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


class Repo:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env

    def git(self, *args: str) -> str:
        result = run(["git", *args], cwd=self.path, env=self.env)
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "--quiet", "--no-verify", "-m", message)
        return self.git("rev-parse", "HEAD")

    def edit(self, relative: str, old: str | re.Pattern[str], new: str) -> None:
        path = self.path / relative
        text = path.read_text()
        changed = old.sub(new, text, count=1) if isinstance(old, re.Pattern) else text.replace(old, new, 1)
        assert changed != text, f"{relative}: nothing to change ({old!r})"
        path.write_text(changed)


def init_repo(path: Path, env: dict[str, str]) -> Repo:
    repo = Repo(path, env)
    repo.git("init", "--quiet", "--initial-branch=main")
    return repo


@pytest.fixture
def template(tmp_path: Path, git_env: dict[str, str]) -> Repo:
    """This checkout's template at commit "v1", in its own git repository."""
    path = tmp_path / "template"
    path.mkdir()
    for part in TEMPLATE_PARTS:
        source = TEMPLATE / part
        if source.is_dir():
            shutil.copytree(source, path / part, ignore=IGNORE)
        elif source.exists():
            shutil.copy2(source, path / part)
    repo = init_repo(path, git_env)
    repo.commit_all("v1")
    return repo


def cruft_create(template: Repo, out: Path, checkout: str | None = None, **context: str) -> Repo:
    project_dir = cruft.create(
        str(template.path), output_dir=out, no_input=True, checkout=checkout, extra_context=context or None
    )
    assert project_dir == out / SLUG
    project = init_repo(project_dir, template.env)
    project.commit_all("generated")
    return project


def cruft_update(project: Repo, checkout: str | None = None, **variables: str) -> None:
    """`cruft update -y [--checkout REF] [--variables-to-update JSON]`."""
    updated = cruft.update(project.path, skip_apply_ask=True, checkout=checkout, extra_context=variables or None)
    assert updated, "cruft update refused"


def cruft_state(project: Repo) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((project.path / ".cruft.json").read_text())
    return state


def merge_check(project: Repo) -> tuple[int, str]:
    result = run([sys.executable, "scripts/check_template_merge.py"], cwd=project.path, env=project.env)
    return result.returncode, result.stdout + result.stderr


def template_v2(template: Repo) -> str:
    """The template moves on: a change to the shared module, a new module file, a Dockerfile fix."""
    root = "{{cookiecutter.project_slug}}"
    template.edit(
        f"{root}/src/mcp_auth/__init__.py",
        '"""',
        '"""Template v2.\n\n',
    )
    (template.path / root / "src/mcp_auth/v2_feature.py").write_text('FEATURE = "added in v2"\n')
    template.edit(f"{root}/Dockerfile", HEALTHCHECK, "--interval=20s")
    return template.commit_all("v2")


def test_update_brings_template_changes_and_keeps_user_tools(template: Repo, tmp_path: Path) -> None:
    project = cruft_create(template, tmp_path / "out")
    v1 = template.git("rev-parse", "HEAD")
    assert json.loads((project.path / ".cruft.json").read_text())["commit"] == v1
    assert merge_check(project)[0] == 0, "a fresh project has nothing to resolve"

    (project.path / USER_TOOL).write_text(USER_TOOL_TEXT)
    project.commit_all("add my tool")

    v2 = template_v2(template)
    cruft_update(project)

    assert json.loads((project.path / ".cruft.json").read_text())["commit"] == v2
    assert (project.path / "src/mcp_auth/__init__.py").read_text().startswith('"""Template v2.')
    assert (project.path / "src/mcp_auth/v2_feature.py").read_text() == 'FEATURE = "added in v2"\n'
    dockerfile = (project.path / "Dockerfile").read_text()
    assert "--interval=20s" in dockerfile and "{{" not in dockerfile, "rendered v2 Dockerfile"
    assert (project.path / USER_TOOL).read_text() == USER_TOOL_TEXT, "the user's tool survives"
    code, output = merge_check(project)
    assert code == 0, output


def test_conflicting_edit_is_caught_by_the_merge_check(template: Repo, tmp_path: Path) -> None:
    project = cruft_create(template, tmp_path / "out")
    project.edit("Dockerfile", HEALTHCHECK, "--interval=60s")  # the user tuned the same line
    project.commit_all("slower healthcheck")

    template_v2(template)
    cruft_update(project)  # exits 0 even though it could not merge cleanly

    dockerfile = (project.path / "Dockerfile").read_text()
    leftovers = sorted(p.name for p in project.path.rglob("*.rej"))
    assert "<<<<<<< " in dockerfile or leftovers, "cruft should have left a conflict behind"
    code, output = merge_check(project)
    assert code == 1, output
    assert re.search(r"^\s+Dockerfile(\.rej)?:", output, re.MULTILINE), output
    # The unrelated template change still arrived.
    assert (project.path / "src/mcp_auth/v2_feature.py").exists()


def test_update_to_a_tagged_release_pulls_exactly_that_release(template: Repo, tmp_path: Path) -> None:
    """Releases are tags (docs/updating.md): `cruft update --checkout v2.0.0` brings v2.0.0 and
    nothing committed after it, and .cruft.json records the tag's commit."""
    v1 = template.git("rev-parse", "HEAD")
    template.git("tag", "v1.0.0")
    v2 = template_v2(template)
    template.git("tag", "v2.0.0")
    root = "{{cookiecutter.project_slug}}"
    (template.path / root / "src/mcp_auth/unreleased.py").write_text('FEATURE = "not released yet"\n')
    unreleased = template.commit_all("work after v2.0.0, untagged")

    project = cruft_create(template, tmp_path / "out", checkout="v1.0.0")
    assert cruft_state(project)["commit"] == v1
    assert not (project.path / "src/mcp_auth/v2_feature.py").exists()
    (project.path / USER_TOOL).write_text(USER_TOOL_TEXT)
    project.commit_all("add my tool")

    cruft_update(project, checkout="v2.0.0")

    state = cruft_state(project)
    assert state["commit"] == v2 == template.git("rev-list", "-n", "1", "v2.0.0") != unreleased
    assert state.get("checkout") == "v2.0.0", "the next `cruft check` compares against the same tag"
    assert (project.path / "src/mcp_auth/v2_feature.py").read_text() == 'FEATURE = "added in v2"\n'
    assert "--interval=20s" in (project.path / "Dockerfile").read_text()
    assert not (project.path / "src/mcp_auth/unreleased.py").exists(), "only what the tag holds"
    assert (project.path / USER_TOOL).read_text() == USER_TOOL_TEXT
    assert merge_check(project)[0] == 0


def test_license_survives_updates_and_can_be_changed_by_one(template: Repo, tmp_path: Path) -> None:
    """The license option lives in .cruft.json like every option: an update keeps it (and the
    year of creation); `cruft update --variables-to-update '{"license": "MIT"}'` changes it."""
    project = cruft_create(template, tmp_path / "out", license="Apache-2.0")
    created = cruft_state(project)["context"]["cookiecutter"]
    assert created["license"] == "Apache-2.0" and re.fullmatch(r"20\d\d", created["__year"])
    assert (project.path / "LICENSE").read_text().lstrip().startswith("Apache License")

    template_v2(template)
    cruft_update(project)
    assert cruft_state(project)["context"]["cookiecutter"]["__year"] == created["__year"]
    assert (project.path / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert 'license = "Apache-2.0"' in (project.path / "pyproject.toml").read_text()
    assert (project.path / "src/mcp_auth/v2_feature.py").exists()
    project.commit_all("update from the template")

    cruft_update(project, license="MIT")
    assert cruft_state(project)["context"]["cookiecutter"]["license"] == "MIT"
    license_text = (project.path / "LICENSE").read_text()
    assert license_text.startswith(f"MIT License\n\nCopyright (c) {created['__year']} Your Name\n")
    assert 'license = "MIT"' in (project.path / "pyproject.toml").read_text()
    assert merge_check(project)[0] == 0


@pytest.mark.slow
def test_updated_project_installs_and_passes_its_own_suite(template: Repo, tmp_path: Path, database_url: str) -> None:
    """After v1 -> user tool -> v2 -> cruft update, the project is still one that works."""
    project = cruft_create(template, tmp_path / "out")
    (project.path / USER_TOOL).write_text(USER_TOOL_TEXT)
    project.commit_all("add my tool")
    template_v2(template)
    cruft_update(project)
    context = json.loads((project.path / ".cruft.json").read_text())["context"]["cookiecutter"]
    updated = BakedProject(project.path, context)
    check_installed_project(updated, database_url, "cruft-updated both/env")
    probe = "from mcp_auth.v2_feature import FEATURE; print(FEATURE)"
    assert updated.run("uv", "run", "--locked", "python", "-c", probe).stdout.strip() == "added in v2"
