"""The generated project's load and fault tests at full scale, in an installed bake.

``tests/mcp_auth/test_load_and_faults.py`` of every generated project runs its quick variants in
the project's default suite (so test_generated_projects.py runs them too); its ``load`` variants
(20 callers for 30 s against two ``serve`` processes sharing one PostgreSQL, across a key rotation;
PostgreSQL stopped and started under load; JWKS and Infisical down) only with ``pytest -m load``.
This runs them: deselected from a default run by the ``load`` marker, run by ``.ci/run``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from baked import TIMINGS, clean_env, run

pytestmark = [pytest.mark.load, pytest.mark.slow]

LOAD_TESTS = "tests/mcp_auth/test_load_and_faults.py"


def test_generated_load_and_fault_tests_pass_at_full_scale(installed_bin: Path) -> None:
    project = installed_bin.parent.parent  # the session's installed bake (.venv/bin -> project)
    command = [str(installed_bin / "pytest"), "-q", "-p", "no:cacheprovider", "-m", "load", LOAD_TESTS]
    started = time.perf_counter()
    result = run(command, cwd=project, env=clean_env(CI="true"), timeout=300)
    elapsed = time.perf_counter() - started
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, "\n".join(lines[-80:]) + result.stderr[-2000:]
    summary = lines[-1]
    measured = [line for line in lines if line.startswith("[load:")]
    TIMINGS.append(f"generated load and fault tests (pytest -m load): {elapsed:.1f}s: {summary}")
    TIMINGS.extend(f"  {line}" for line in measured)
    assert summary.startswith("4 passed") and "skipped" not in summary and "deselected" in summary, summary
    assert len(measured) == 4, "each load test printed its numbers"
