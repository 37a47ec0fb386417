"""Slow: install generated projects with uv exactly as a user would and run their own checks.

Each combination: ``uv sync --locked`` (so uv.lock matches pyproject.toml), ruff, mypy, the
project's pytest suite against the real PostgreSQL, and the console script serving /health.
"""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import BakedProject, free_port

INSTALLED = [("both", "env"), ("bearer", "postgres"), ("cloudflare", "infisical")]


@pytest.mark.slow
@pytest.mark.parametrize(("auth_mode", "token_store"), INSTALLED)
def test_generated_project_installs_lints_and_passes_its_suite(
    bake, database_url: str, auth_mode: str, token_store: str
) -> None:
    started = time.perf_counter()
    project: BakedProject = bake(auth_mode=auth_mode, token_store=token_store)
    baked = time.perf_counter() - started
    installed = project.install()
    project.run("uv", "lock", "--check")
    project.run("uv", "run", "--locked", "ruff", "check", ".")
    project.run("uv", "run", "--locked", "ruff", "format", "--check", ".")
    lint_started = time.perf_counter()
    project.run("uv", "run", "--locked", "mypy")
    mypy_time = time.perf_counter() - lint_started
    suite_started = time.perf_counter()
    result = project.run_tests(env={"TEST_DATABASE_URL": database_url, "CI": "true"})
    suite = time.perf_counter() - suite_started
    summary = result.stdout.strip().splitlines()[-1]
    print(
        f"\n[{auth_mode}/{token_store}] bake {baked:.1f}s, install {installed:.1f}s, "
        f"mypy {mypy_time:.1f}s, suite {suite:.1f}s: {summary}"
    )
    assert " passed" in summary and "failed" not in summary and "error" not in summary
    assert "skipped" not in summary, "a generated suite must not skip anything when PostgreSQL is available"
    assert suite < 60, f"generated suite took {suite:.1f}s (budget 60 s)"


@pytest.mark.slow
def test_scaffold_to_health_as_the_image_runs_it(bake) -> None:
    """bake -> install -> the image's CMD (`<slug> serve` with MCP_HOST=0.0.0.0) answering /health."""
    started = time.perf_counter()
    project: BakedProject = bake(auth_mode="bearer", token_store="env")
    project.install()
    port = free_port()
    server = project.start_server(
        {
            "MCP_HOST": "0.0.0.0",
            "MCP_PORT": str(port),
            "MCP_BEARER_TOKENS": "local=change-me-0123456789abcdef",
        }
    )
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
        assert response is not None, server.stdout.read() if server.stdout else "no output"
        print(f"\nscaffold -> install -> /health answering: {elapsed:.1f}s")
        assert response.json() == {
            "status": "ok", "service": project.slug, "auth": "bearer", "token_storage": "env",
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
