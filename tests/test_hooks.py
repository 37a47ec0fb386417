"""The hooks, unit-tested without baking: each pre-gen rule, and the hooks as plain Python.

The hooks are loaded from their paths with importlib (they are scripts, not a package). The
context they validate is the one cookiecutter renders from cookiecutter.json without input.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from baked import TEMPLATE, run, tool
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config
from cookiecutter.utils import create_env_with_context

HOOKS = TEMPLATE / "hooks"
PRE_GEN = HOOKS / "pre_gen_project.py"
POST_GEN = HOOKS / "post_gen_project.py"
UNRENDERED_CONTEXT = "{{ cookiecutter | tojson }}"

# Valid options that could end a r'''-string or break a line if the context were not escaped.
TRICKY = {
    "project_name": "O'Brien's '''MCP''' <&>",
    "description": "Ends with a quote '",
    "author_name": "Zoë \u2603 tab\tend",
}
# Invalid ones (the hook must still read them back to name them): backslashes, double quotes.
UNSAFE = {**TRICKY, "description": 'Say """hi""" \\u0027 \\', "author_name": "new\nline \\'\\"}


def load_hook(path: Path, name: str) -> ModuleType:
    """Import a hook file as a module (no bytecode next to the template's hooks)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def render_hook(path: Path, context: dict[str, Any], out: Path) -> Path:
    """Render a hook as cookiecutter does before running it (hooks.run_script_with_context)."""
    full = {"cookiecutter": context}
    rendered = create_env_with_context(full).from_string(path.read_text()).render(**full)
    target = out / path.name
    target.write_text(str(rendered))
    return target


@pytest.fixture(scope="module")
def pre_gen() -> ModuleType:
    return load_hook(PRE_GEN, "pre_gen_project")


@pytest.fixture(scope="module")
def post_gen() -> ModuleType:
    return load_hook(POST_GEN, "post_gen_project")


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    """The context a `cookiecutter --no-input` bake renders: derived names filled in, first choices."""
    context = generate_context(context_file=str(TEMPLATE / "cookiecutter.json"))
    return dict(prompt_for_config(context, no_input=True))


def with_(defaults: dict[str, Any], **values: str) -> dict[str, Any]:
    return {**defaults, **values}


def test_the_default_context_passes(pre_gen: ModuleType, defaults: dict[str, Any]) -> None:
    assert defaults["project_slug"] == "coda-mcp" and defaults["package_name"] == "coda_mcp"
    assert defaults["service_token_env"] == "CODA_API_TOKEN"
    assert pre_gen.problems(defaults) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("project_slug", "a1-b2"),
        ("project_slug", "coda"),
        ("package_name", "coda_mcp2"),
        ("package_name", "mcp_tools"),
        ("service_name", "my-api_2"),
        ("service_token_env", "X"),
        ("upstream_base_url", "http://localhost:8080/api/v1?x=1"),
        ("http_port", "1"),
        ("http_port", "65535"),
        ("python_version", "3.11"),
        ("python_version", "3.19"),
        ("author_email", "first.last+tag@example.co.uk"),
        ("project_name", "O'Brien's MCP"),
        ("description", "Talks to the 'Coda' API: docs, tables & rows <v1>"),
        ("author_name", "Zoë Ó"),
        ("license", "Apache-2.0"),
        ("license", "Proprietary"),
    ],
)
def test_valid_values_pass(pre_gen: ModuleType, defaults: dict[str, Any], option: str, value: str) -> None:
    assert pre_gen.problems(with_(defaults, **{option: value})) == []


BAD = [
    ("project_slug", "Bad Slug"),
    ("project_slug", "1mcp"),
    ("project_slug", "coda--mcp"),
    ("project_slug", "coda-"),
    ("project_slug", "coda_mcp"),
    ("package_name", "coda-mcp"),
    ("package_name", "Coda"),
    ("package_name", "_coda"),
    ("package_name", "class"),
    ("package_name", "import"),
    ("package_name", "mcp_auth"),
    ("package_name", "mcp"),
    ("package_name", "fastmcp"),
    ("package_name", "tests"),
    ("package_name", "migrations"),
    ("service_name", "Coda API"),
    ("service_name", "1coda"),
    ("service_name", "-coda"),
    ("service_token_env", "coda-token"),
    ("service_token_env", "coda_token"),
    ("service_token_env", "1TOKEN"),
    ("upstream_base_url", "ftp://example.com"),
    ("upstream_base_url", "example.com"),
    ("upstream_base_url", "https://"),
    ("upstream_base_url", "https://exa mple.com"),
    ("upstream_base_url", 'https://example.com/"x'),
    ("upstream_base_url", "https://example.com/{{x}}"),
    ("http_port", "80800"),
    ("http_port", "65536"),
    ("http_port", "0"),
    ("http_port", "http"),
    ("http_port", ""),
    ("python_version", "3.9"),
    ("python_version", "3.10"),
    ("python_version", "3.1"),
    ("python_version", "4.0"),
    ("python_version", "3.12.1"),
    ("author_email", "nobody"),
    ("author_email", "a@b@c"),
    ("author_email", "a b@example.com"),
    ("author_email", 'a"b@example.com'),
    ("project_name", ""),
    ("project_name", "   "),
    ("project_name", 'The "Best" MCP'),
    ("description", 'Talks to the "Coda" API'),
    ("description", "C:\\path"),
    ("description", ""),
    ("author_name", "Back\\slash"),
    ("author_name", '"'),
    ("author_name", "\t"),
    ("license", "GPL-3.0"),
    ("license", "mit"),
    ("license", ""),
    ("auth_mode", "oauth"),
    ("token_store", "vault"),
]


@pytest.mark.parametrize(("option", "value"), BAD)
def test_each_bad_value_is_reported_naming_its_option(
    pre_gen: ModuleType, defaults: dict[str, Any], option: str, value: str
) -> None:
    found = pre_gen.problems(with_(defaults, **{option: value}))
    assert [(problem.option, problem.value) for problem in found] == [(option, value)]
    line = str(found[0])
    assert line == f"ERROR: {option} {value!r} is invalid: use {found[0].allowed}."
    assert found[0].allowed, "the message says what is allowed"


def test_every_rule_has_bad_values(pre_gen: ModuleType) -> None:
    options = {option for option, _, _ in pre_gen.RULES} | set(pre_gen.FREE_TEXT) | set(pre_gen.CHOICES)
    assert options <= {option for option, _ in BAD}


def test_choices_are_the_lists_in_cookiecutter_json(pre_gen: ModuleType) -> None:
    cookiecutter_json = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    for option, choices in pre_gen.CHOICES.items():
        assert choices == cookiecutter_json[option], option
    assert cookiecutter_json["license"][0] == "MIT", "MIT is the default"
    assert "license" in cookiecutter_json["__prompts__"]


def test_a_bad_license_names_the_choices(pre_gen: ModuleType, defaults: dict[str, Any]) -> None:
    (problem,) = pre_gen.problems(with_(defaults, license="GPL-3.0"))
    assert str(problem) == "ERROR: license 'GPL-3.0' is invalid: use one of MIT, Apache-2.0, Proprietary."


def test_every_problem_is_reported_once(pre_gen: ModuleType, defaults: dict[str, Any]) -> None:
    context = with_(defaults, project_slug="1mcp", package_name="class", http_port="99999", description='"')
    found = pre_gen.problems(context)
    assert [problem.option for problem in found] == ["project_slug", "http_port", "description", "package_name"]


def test_unrendered_hooks_are_plain_python_that_import_without_running(
    capfd: pytest.CaptureFixture[str],
) -> None:
    for path, name in [(PRE_GEN, "unrendered_pre_gen"), (POST_GEN, "unrendered_post_gen")]:
        ast.parse(path.read_text(), filename=str(path))
        module = load_hook(path, name)  # main() would exit (pre) or print (post)
        assert module.CONTEXT == UNRENDERED_CONTEXT, "one string literal is the only template expression"
        assert path.read_text().count("{{") == 1 and "{%" not in path.read_text()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("hook", [PRE_GEN, POST_GEN], ids=lambda path: path.name)
def test_rendered_hook_reads_back_the_exact_context(
    hook: Path, defaults: dict[str, Any], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    context = with_(defaults, **UNSAFE)
    rendered = render_hook(hook, context, tmp_path)
    assert "'''" not in rendered.read_text().split("r'''", 1)[1].rsplit("'''", 1)[0], "tojson escapes '"
    module = load_hook(rendered, f"rendered_{hook.stem}")
    assert json.loads(module.CONTEXT) == context
    assert capfd.readouterr().err == ""


def test_rendered_hooks_are_ruff_clean(defaults: dict[str, Any], tmp_path: Path) -> None:
    """Rendering puts a long JSON line in the hooks: still lint- and format-clean (template config)."""
    paths = [str(render_hook(hook, with_(defaults, **UNSAFE), tmp_path)) for hook in (PRE_GEN, POST_GEN)]
    config = str(TEMPLATE / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = run([tool("ruff"), *command, "--config", config, *paths])
        assert result.returncode == 0, result.stdout + result.stderr


def run_rendered(hook: Path, context: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The rendered hook run as cookiecutter runs it: a script, with the interpreter running cookiecutter."""
    return run([sys.executable, str(render_hook(hook, context, tmp_path))], cwd=tmp_path)


def test_rendered_pre_gen_hook_exits_0_for_valid_options(defaults: dict[str, Any], tmp_path: Path) -> None:
    result = run_rendered(PRE_GEN, with_(defaults, **TRICKY), tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_rendered_pre_gen_hook_prints_one_line_per_bad_option_and_exits_1(
    defaults: dict[str, Any], tmp_path: Path
) -> None:
    result = run_rendered(PRE_GEN, with_(defaults, http_port="80800", author_name="Back\\slash"), tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "ERROR: http_port '80800' is invalid: use a TCP port number from 1 to 65535.",
        "ERROR: author_name 'Back\\\\slash' is invalid: use non-empty text without double quotes or backslashes.",
    ]


def test_post_gen_hook_prints_the_next_steps(post_gen: ModuleType, defaults: dict[str, Any], tmp_path: Path) -> None:
    assert "cd github-mcp && uv sync" in post_gen.next_steps(with_(defaults, project_slug="github-mcp"))
    result = run_rendered(POST_GEN, defaults, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("\nCreated coda-mcp. Next:\n  cd coda-mcp && uv sync && uv run pytest\n")
