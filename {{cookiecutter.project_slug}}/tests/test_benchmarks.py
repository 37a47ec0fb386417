"""The benchmark command in its quick mode, so it cannot rot: it runs and prints every table's rows.

No timing is asserted (benchmarks print numbers; docs/performance.md reads them). Quick mode
serves the HTTP variants from threads of this process, on the run's migrated PostgreSQL database.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
from mcp_auth.config import ProjectInfo
from mcp_auth.db import Database

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SERVERS = (
    "bare FastMCP (floor)",
    "bearer + env store",
    "bearer + postgres store",
    "bearer + infisical store",
    "cloudflare jwt + env store",
    "oauth jwt + env store",
    "api key + env store, db audit",
)
TOOLS = ("whoami", "upstream_get")
NUMBER = r"\d+\.\d{3}"


@pytest.mark.postgres
def test_quick_benchmark_prints_every_table(
    database_url: str,
    postgres_database: Database,  # the tables emptied first: the run keys the audit chain
    project: ProjectInfo,
    token_functions_state: None,  # the in-process servers' lifespans set the package-level service
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A hostile shell: none of it may reach the servers (they get explicit environments).
    for name in ("MCP_AUTH_MODE", "MCP_TOKEN_STORE", "MCP_BEARER_TOKENS", "CF_ACCESS_AUD", "INFISICAL_HOST"):
        monkeypatch.setenv(name, "junk")
    monkeypatch.setenv("DATABASE_URL", "postgresql://junk@127.0.0.1:1/junk")
    monkeypatch.setenv("BENCH_DATABASE_URL", "postgresql://junk@127.0.0.1:1/junk")
    monkeypatch.setenv("UPSTREAM_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv(project.service_token_env, "junk-upstream-token")
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # run.py imports its siblings
    spec = importlib.util.spec_from_file_location("benchmarks_run", BENCHMARKS / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmarks_run", run)
    spec.loader.exec_module(run)

    assert run.main(["--quick", "--database-url", database_url]) == 0
    out = capsys.readouterr().out

    for label in ("cpu", "python", "postgresql"):
        assert re.search(rf"^{label} *: \S", out, re.MULTILINE), label
    for server in SERVERS:
        for tool in TOOLS:
            row = rf"^{re.escape(server)} +{tool} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +\d+\.\d\dx "
            assert re.search(row, out, re.MULTILINE), (server, tool)
        assert re.search(rf"^{re.escape(server)} +n/a", out, re.MULTILINE), server  # RSS: none of its own in-process
    assert "key rotation" in out and "tokens import" in out and "get_token" in out  # bench_vault.py's tables
    assert os.environ["UPSTREAM_BASE_URL"] == "http://127.0.0.1:1"  # put back as it was
