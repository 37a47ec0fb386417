"""The shape of mcp_auth that keeps it readable: its imports form a tree (function-level and
TYPE_CHECKING imports included), the layers only import downwards, and a server without a
database never loads the database stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mcp_auth
from mcp_auth.config import ProjectInfo

PACKAGE_DIR = Path(mcp_auth.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py") if "_migrations" not in path.parts}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if MODULES[module].name == "__init__.py" else 0)
        base = ".".join([*parts[:keep], *([base] if base else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def imports_of(module: str) -> set[str]:
    """Every name ``module`` imports anywhere in its body (functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_imported(module, node))
    return found


def internal_imports(module: str) -> set[str]:
    """The mcp_auth modules ``module`` depends on (its own parent packages excluded)."""
    edges: set[str] = set()
    for name in imports_of(module):
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            edges.add(name)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_the_import_graph_is_a_tree_without_cycles() -> None:
    graph = {module: internal_imports(module) for module in MODULES}
    assert sum(map(len, graph.values())) > 50, "the graph was read"
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function() -> None:
    """The check above cannot pass vacuously: a back edge, even a function-level one, is found."""
    source = "import mcp_auth.b\ndef f():\n    from mcp_auth import a\n"
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update(_imported("mcp_auth.errors", node))
    assert {"mcp_auth.b", "mcp_auth.a"} <= imported
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_crypto_depends_only_on_errors() -> None:
    assert internal_imports("mcp_auth.crypto") == {"mcp_auth.errors"}


def test_verifiers_never_import_stores() -> None:
    for module in MODULES:
        if module.startswith("mcp_auth.verifiers"):
            assert not any(t.startswith("mcp_auth.stores") for t in internal_imports(module)), module


def test_the_database_stack_stays_in_its_package() -> None:
    """SQLAlchemy, Alembic and psycopg are imported only by mcp_auth.db, the database store,
    the CLI's database commands and the test helpers."""
    allowed = (
        "mcp_auth.db",
        "mcp_auth.stores.database",
        "mcp_auth.verifiers.api_key",
        "mcp_auth.cli.",
        "mcp_auth.testing.",
    )
    for module in MODULES:
        heavy = {name for name in imports_of(module) if name.split(".")[0] in ("sqlalchemy", "alembic", "psycopg")}
        if heavy:
            assert module.startswith(allowed), f"{module} imports {sorted(heavy)}"


def test_mcp_auth_never_imports_the_user_package(project: ProjectInfo) -> None:
    assert project.package and project.package != "mcp_auth"
    for module in MODULES:
        user = {name for name in imports_of(module) if name.split(".")[0] == project.package}
        assert not user, f"{module} imports {sorted(user)}"


_PROBE = """
import json, sys
from {package}.cli import app  # what the console script imports before `serve`
from {package}.app import create_app
from mcp_auth import load_settings
from {package}.project import PROJECT
loaded = {{}}
for label, extra in json.loads(sys.argv[1]):
    env = {{"MCP_AUTH_MODE": "bearer", "MCP_TOKEN_STORE": "env", "MCP_BEARER_TOKENS": "ci=" + "x" * 40,
           "{token_env}": "t" * 20, "INFISICAL_PROJECT_ID": "p", "INFISICAL_API_KEY": "k" * 20, **extra}}
    create_app(load_settings(PROJECT, environ=env))
    loaded[label] = sorted(m for m in ("sqlalchemy", "psycopg", "alembic") if m in sys.modules)
print(json.dumps(loaded))
"""


def probe(project: ProjectInfo, *servers: tuple[str, dict[str, str]]) -> dict[str, list[str]]:
    """Build the app for each (label, env) in turn in one fresh interpreter; after each, which of
    the database modules are loaded."""
    code = _PROBE.format(package=project.package, token_env=project.service_token_env)
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(servers)], capture_output=True, text=True, timeout=120, env={}
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_a_server_without_a_database_never_loads_the_database_stack(project: ProjectInfo, sqlite_url: str) -> None:
    loaded = probe(
        project,
        ("env", {}),
        ("infisical", {"MCP_TOKEN_STORE": "infisical"}),
        ("database", {"DATABASE_URL": sqlite_url}),
    )
    assert loaded["env"] == [] and loaded["infisical"] == []
    # The same probe, once a server has a database, does see the stack: the check is not vacuous.
    assert {"sqlalchemy", "alembic"} <= set(loaded["database"])  # psycopg: only for PostgreSQL URLs
