"""Start-up check: the ``mcp_auth`` being run is the copy this project ships.

Every generated project vendors ``mcp_auth`` under the same top-level name. Installed into one
environment, two projects share one importable ``mcp_auth``: the wheel installed last, or with
editable installs the ``src/`` first on ``sys.path``. While both copies are byte-identical (same
template version) that is harmless, and both servers run. When they differ, a server would
silently run the other project's copy; this check refuses to start instead, in one line.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from importlib import metadata
from pathlib import Path

from mcp_auth.errors import ConfigError

_HERE = Path(__file__).resolve().parent  # the imported mcp_auth
_SKIP = {"__pycache__", "_migrations"}


def require_own_copy(package: str) -> None:
    """ConfigError unless the imported mcp_auth equals the one shipped with ``package``.

    ``package`` is the project's import name; empty (mcp_auth used on its own) skips the check.
    """
    if not package:
        return
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return  # not installed as a package (e.g. a test harness): nothing to compare with
    sibling = Path(spec.origin).resolve().parent.parent / "mcp_auth"
    try:
        if sibling != _HERE:  # editable installs: this project's own src/mcp_auth is elsewhere
            expected = _digests(sibling)
        else:
            expected = _recorded_digests(package) or _digests(_HERE)
    except OSError as exc:
        raise ConfigError(f"cannot read {package}'s copy of mcp_auth to check it ({type(exc).__name__})") from None
    differing = sorted(name for name, digest in expected.items() if _digest(_HERE / name) != digest)
    if differing:
        raise ConfigError(
            f"the mcp_auth imported from {_HERE} is not the copy {package} ships ({differing[0]} differs): "
            "another generated MCP project in this environment replaced it; install each project "
            "in its own virtual environment (uv sync in its directory)"
        )


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _digests(root: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if not _SKIP.intersection(relative.parts):
            found[relative.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _recorded_digests(package: str) -> dict[str, str]:
    """What the wheel that installed ``package`` recorded for mcp_auth's files (RECORD hashes)."""
    names = metadata.packages_distributions().get(package, [])
    for name in names:
        files = metadata.distribution(name).files or []
        recorded: dict[str, str] = {}
        for file in files:
            parts = file.parts
            if parts[0] == "mcp_auth" and file.hash is not None and file.hash.mode == "sha256":
                if not _SKIP.intersection(parts) and file.name.endswith(".py"):
                    raw = base64.urlsafe_b64decode(file.hash.value + "=" * (-len(file.hash.value) % 4))
                    recorded["/".join(parts[1:])] = raw.hex()
        if recorded:
            return recorded
    return {}
