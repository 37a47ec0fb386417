"""Two generated projects installed into one virtual environment (slow: builds two wheels).

Every project ships ``mcp_auth`` under the same top-level name. Copies from the same template
version are byte-identical, so both servers work side by side; when one project's copy differs
(another template version), the other project refuses to start with one line instead of
silently running a foreign copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from baked import Bake, BakedProject, clean_env, run

PROBE = """
import sys
from importlib import import_module

package = sys.argv[1]
app = import_module(package + ".app")
project = import_module(package + ".project").PROJECT
from mcp_auth import load_settings

env = {"MCP_AUTH_MODE": "bearer", "MCP_TOKEN_STORE": "env", "MCP_BEARER_TOKENS": "ci=" + "x" * 40}
built = app.create_app(load_settings(project, environ=env))
print(package, "app built:", type(built).__name__)
"""


def install(venv: Path, *projects: BakedProject, reinstall: str | None = None) -> None:
    command = ["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    if reinstall:
        command += ["--reinstall-package", reinstall]
    result = run([*command, *(str(p.path) for p in projects)], env=clean_env(), timeout=300)
    assert result.returncode == 0, result.stderr


def build_app(venv: Path, project: BakedProject, tmp_path: Path) -> tuple[int, str]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    result = run([str(venv / "bin" / "python"), str(probe), project.package], cwd=tmp_path, env=clean_env())
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
def test_two_bakes_share_one_environment(bake: Bake, tmp_path: Path) -> None:
    alpha = bake(project_name="Alpha MCP", service_name="alpha", auth_mode="bearer")
    beta = bake(project_name="Beta MCP", service_name="beta", auth_mode="bearer")
    venv = tmp_path / "venv"
    assert run(["uv", "venv", "--quiet", str(venv)], env=clean_env()).returncode == 0
    install(venv, alpha, beta)

    for project in (alpha, beta):
        code, output = build_app(venv, project, tmp_path)
        assert code == 0, output
        assert f"{project.package} app built" in output

    # Beta moves to another template version: its copy of mcp_auth now differs.
    crypto = beta.path / "src" / "mcp_auth" / "crypto.py"
    crypto.write_text(crypto.read_text() + "\n# a later template version\n")
    install(venv, beta, reinstall=beta.slug)

    code, output = build_app(venv, beta, tmp_path)
    assert code == 0, output
    code, output = build_app(venv, alpha, tmp_path)
    assert code != 0 and "is not the copy alpha_mcp ships (crypto.py differs)" in output
    served = run(
        [str(venv / "bin" / alpha.slug), "serve"],
        env=clean_env(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS="ci=" + "x" * 40),
        timeout=60,
    )
    assert served.returncode == 1
    assert served.stderr.strip().splitlines() == [served.stderr.strip()], "one line"
    assert "another generated MCP project in this environment replaced it" in served.stderr
    assert "Traceback" not in served.stderr + served.stdout
