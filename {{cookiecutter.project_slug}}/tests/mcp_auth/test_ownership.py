"""The start-up check that the imported mcp_auth is the project's own copy (two generated
projects in one environment share the top-level name ``mcp_auth``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import mcp_auth
import pytest
from mcp_auth.errors import ConfigError
from mcp_auth.ownership import require_own_copy

IMPORTED = Path(mcp_auth.__file__).resolve().parent


def other_project(root: Path, name: str) -> Path:
    """A project laid out like an editable install: src/<name>/ next to its own src/mcp_auth/."""
    src = root / "src"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("")
    shutil.copytree(IMPORTED, src / "mcp_auth", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_no_package_means_nothing_to_compare() -> None:
    require_own_copy("")


def test_an_identical_copy_elsewhere_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(other_project(tmp_path, "twin_mcp")))
    require_own_copy("twin_mcp")


def test_a_different_copy_refuses_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = other_project(tmp_path, "older_mcp")
    crypto = src / "mcp_auth" / "crypto.py"
    crypto.write_text(crypto.read_text() + "\n# another template version\n")
    monkeypatch.syspath_prepend(str(src))
    with pytest.raises(ConfigError) as caught:
        require_own_copy("older_mcp")
    message = caught.value.message
    assert "\n" not in message
    assert "older_mcp" in message and "crypto.py differs" in message and "virtual environment" in message


def test_the_running_project_passes(project: mcp_auth.ProjectInfo) -> None:
    require_own_copy(project.package)
