"""Slow: install generated projects with uv exactly as a user would and run their own checks.

Each: ``uv sync --locked`` (so uv.lock matches pyproject.toml), ruff, mypy, the project's pytest
suite against the real PostgreSQL, wall times printed. A third installed project is the
cruft-updated one in test_cruft.py.
"""

from __future__ import annotations

import json
import shlex
import time

import httpx
import pytest
from baked import HOSTILE_SHELL, TIMINGS, Bake, BakedProject, check_installed_project, free_port

INSTALLED = [("bearer", "postgres"), ("cloudflare", "infisical")]


@pytest.mark.slow
@pytest.mark.parametrize(("auth_mode", "token_store"), INSTALLED)
def test_generated_project_installs_lints_and_passes_its_suite(
    bake: Bake, database_url: str, auth_mode: str, token_store: str
) -> None:
    project: BakedProject = bake(
        auth_mode=auth_mode, token_store=token_store, project_name=f"{auth_mode} {token_store}"
    )
    # Run from a shell that exports every runtime variable with a wrong value (and the project's
    # own token variable): the suite must not depend on the developer's environment.
    shell = {**HOSTILE_SHELL, str(project.context["service_token_env"]): "wrong-upstream-token"}
    check_installed_project(project, database_url, f"{auth_mode}/{token_store}, hostile shell", shell)


@pytest.mark.slow
def test_scaffold_to_health_as_the_image_runs_it(bake: Bake) -> None:
    """bake -> install -> the image's CMD with the image's ENV, answering /health."""
    started = time.perf_counter()
    port = free_port()
    project: BakedProject = bake(auth_mode="bearer", token_store="env", http_port=str(port))
    TIMINGS.append(f"bake (cookiecutter, hooks included): {time.perf_counter() - started:.1f}s")
    project.install()
    image_env = dockerfile_runtime_env(project.read("Dockerfile"))
    assert image_env["MCP_HOST"] == "0.0.0.0" and image_env["MCP_PORT"] == str(port)
    command = dockerfile_cmd(project.read("Dockerfile"))
    assert command == [project.slug, "serve"]
    server = project.start_server({**image_env, "MCP_BEARER_TOKENS": "local=change-me-0123456789abcdef0123456789"})
    try:
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
        assert response is not None, project.server_output() or "no output"
        TIMINGS.append(f"scaffold -> install -> /health answering: {elapsed:.1f}s")
        assert response.json() == {"status": "ok", "service": project.slug, "auth": "bearer", "token_storage": "env"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _runtime_stage(dockerfile: str) -> list[str]:
    return dockerfile.split("AS runtime", 1)[1].splitlines()


def dockerfile_runtime_env(dockerfile: str) -> dict[str, str]:
    """The ENV of the final stage, except PATH (the venv's bin, which start_server uses directly)."""
    text = "\n".join(_runtime_stage(dockerfile)).replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                name, _, value = pair.partition("=")
                if name != "PATH":
                    env[name] = value
    return env


def dockerfile_cmd(dockerfile: str) -> list[str]:
    lines = [line for line in _runtime_stage(dockerfile) if line.startswith("CMD ")]
    return list(json.loads(lines[-1][4:]))
