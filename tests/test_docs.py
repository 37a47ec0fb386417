"""The operator docs stay true: messages quoted from the code, links, checklist, contract names.

troubleshooting.md marks every quoted error with a line `> Message: `...``. Each must be a
message the generated code can really produce: a string literal of the generated sources, or
an f-string / `+` concatenation whose placeholders the doc filled in with example values.
`> Compose: `...`` lines quote docker compose; the part after "is missing a value: " is ours
and must be in docker-compose.yml.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from baked import TEMPLATE, BakedProject, bake

DOCS = TEMPLATE / "docs"
PAGES = [
    "README.md",
    "authentication.md",
    "token-storage.md",
    "deployment-checklist.md",
    "troubleshooting.md",
    "migration.md",
    "security.md",
    "updating.md",
]
MESSAGE_LINE = re.compile(r"^> Message: `(.+)`\s*$")
COMPOSE_LINE = re.compile(r"^> Compose: `(.+)`\s*$")
# DESIGN.md section 6: the CLI contract.
CLI_COMMANDS = {
    "serve",
    "keygen",
    "db upgrade",
    "tokens set",
    "tokens get",
    "tokens delete",
    "tokens list",
    "tokens rotate-key",
    "tokens import-env",
    "keys create",
    "keys list",
    "keys revoke",
    "audit list",
    "audit verify",
}
DOC_SLUG = "coda-mcp"  # the docs use the default project's names


def read(page: str) -> str:
    return (DOCS / page).read_text()


# ---- messages -----------------------------------------------------------------------------


class Literals:
    """Every string a module can build: constants, f-strings, and `+` chains with a string in them."""

    def __init__(self) -> None:
        self.constants: list[str] = []
        self.patterns: list[re.Pattern[str]] = []

    def add_source(self, source: str) -> None:
        tree = ast.parse(source)
        inner: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                inner.update(id(v) for v in node.values)
                self.patterns.append(self._compile(node.values))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                parts = self._flatten(node)
                if any(isinstance(p, (ast.Constant, ast.JoinedStr)) and self._is_text(p) for p in parts):
                    self.patterns.append(self._compile(parts))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner:
                self.constants.append(node.value)

    @staticmethod
    def _is_text(node: ast.AST) -> bool:
        if isinstance(node, ast.JoinedStr):
            return True
        return isinstance(node, ast.Constant) and isinstance(node.value, str)

    def _flatten(self, node: ast.AST) -> list[ast.AST]:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._flatten(node.left) + self._flatten(node.right)
        if isinstance(node, ast.JoinedStr):
            return list(node.values)
        return [node]

    MIN_LITERAL = 8  # a pattern like f"{name}: {msg}" is mostly wildcards and would match anything

    @classmethod
    def _compile(cls, parts: Sequence[ast.AST]) -> re.Pattern[str]:
        literal = "".join(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str))
        if len(literal.strip()) < cls.MIN_LITERAL:
            return re.compile(r"(?!)")  # matches nothing: such messages must be quoted as constants
        regex = "".join(
            re.escape(p.value) if isinstance(p, ast.Constant) and isinstance(p.value, str) else ".+?" for p in parts
        )
        return re.compile(regex, re.DOTALL)

    def produces(self, message: str) -> bool:
        return any(message in constant for constant in self.constants) or any(
            pattern.fullmatch(message) for pattern in self.patterns
        )


@pytest.fixture(scope="module")
def project(cookies_session: Any) -> BakedProject:
    return bake(cookies_session)


@pytest.fixture(scope="module")
def literals(project: BakedProject) -> Literals:
    found = Literals()
    src = project.path / "src"
    for path in src.rglob("*.py"):
        if "testing" not in path.relative_to(src).parts:
            found.add_source(path.read_text())
    return found


def quoted(pattern: re.Pattern[str]) -> list[str]:
    return [m.group(1) for line in read("troubleshooting.md").splitlines() if (m := pattern.match(line))]


def test_matcher_is_not_vacuous() -> None:
    found = Literals()
    found.add_source(
        'X = "alpha beta"\ny = f"{name} is not set"\nz = "left side: " + ASK["m"]\nw = f"{name}: {error}"\n'
    )
    assert found.produces("alpha") and found.produces("CODA_API_TOKEN is not set")
    assert found.produces("left side: anything")
    assert not found.produces("Totally invented: nothing like this exists"), "mostly-wildcard f-strings match nothing"
    assert not found.produces("gamma") and not found.produces("CODA_API_TOKEN is set")


def test_troubleshooting_messages_are_verbatim_from_the_code(literals: Literals) -> None:
    messages = quoted(MESSAGE_LINE)
    assert len(messages) >= 15, "the runbook should cover the messages operators meet"
    invented = [m for m in messages if not literals.produces(m)]
    assert not invented, "not produced by the generated code (copy them verbatim):\n" + "\n".join(invented)


def test_troubleshooting_compose_messages_match_the_compose_file(project: BakedProject) -> None:
    compose = project.read("docker-compose.yml")
    messages = quoted(COMPOSE_LINE)
    assert messages
    for message in messages:
        ours = message.partition("is missing a value: ")[2]
        assert ours and ours in compose, message


def test_every_troubleshooting_entry_quotes_a_message() -> None:
    entry = None
    has_quote: dict[str, bool] = {}
    for line in read("troubleshooting.md").splitlines():
        if line.startswith("### "):
            entry = line
            has_quote[entry] = False
        elif line.startswith("## "):
            entry = None
        elif entry and (MESSAGE_LINE.match(line) or COMPOSE_LINE.match(line)):
            has_quote[entry] = True
    assert has_quote and all(has_quote.values()), [e for e, ok in has_quote.items() if not ok]


# ---- structure and links ------------------------------------------------------------------


def test_all_pages_exist_and_the_index_links_them() -> None:
    index = read("README.md")
    for page in [*PAGES, "architecture.md", "infisical-store.md"]:
        assert (DOCS / page).is_file(), page
        if page != "README.md":
            assert f"]({page})" in index, f"docs/README.md does not link {page}"


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.MULTILINE)}


def test_relative_links_resolve() -> None:
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_checklist_has_enough_items() -> None:
    items = re.findall(r"^- \[ \] \S", read("deployment-checklist.md"), re.MULTILINE)
    assert len(items) >= 15, len(items)


def test_authentication_has_a_request_flow_diagram() -> None:
    text = read("authentication.md")
    diagram = re.search(r"```mermaid\n(.+?)```", text, re.DOTALL)
    assert diagram, "a ```mermaid block"
    body = diagram.group(1)
    assert re.match(r"\s*(sequenceDiagram|flowchart|graph)\b", body)
    for name in ["Cf-Access-Jwt-Assertion", "401", "503", "tools/call"]:
        assert name in body, name
    for section in ["Cloudflare Access", "bearer", "API key"]:
        assert section.lower() in text.lower()


def test_token_storage_has_the_decision_matrix() -> None:
    text = read("token-storage.md")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = rows[0].lower()
    assert "env" in header and "postgresql" in header and "infisical" in header
    criteria = {re.sub(r"\W", "", row.split("|")[1]).lower() for row in rows[2:]}
    for criterion in ["security", "complexity", "cost", "rotationoftheupstreamtoken"]:
        assert criterion in criteria, criterion
    assert all(row.count("|") == rows[0].count("|") for row in rows[: len(criteria) + 2])


def test_docs_use_only_real_cli_commands() -> None:
    used = set()
    for page in DOCS.glob("*.md"):
        for match in re.finditer(rf"\b{DOC_SLUG} ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", page.read_text()):
            group, sub = match.group(1), match.group(2)
            used.add(group if group in CLI_COMMANDS or not sub else f"{group} {sub}")
    unknown = sorted(used - CLI_COMMANDS)
    assert not unknown, f"docs mention commands the CLI does not have: {unknown}"
    assert {"tokens import-env", "db upgrade", "keygen"} <= used


def test_updating_names_the_ownership_split() -> None:
    text = read("updating.md")
    for phrase in [
        "cruft create",
        "cruft update",
        "cruft check",
        "src/mcp_auth/",
        "tests/mcp_auth/",
        "migrations/",
        "Dockerfile",
        "src/<package>/tools/",
        "check_template_merge.py",
    ]:
        assert phrase in text, phrase
