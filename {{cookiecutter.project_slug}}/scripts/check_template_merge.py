#!/usr/bin/env python3
"""Fail when a `cruft update` left an unfinished merge behind.

    python scripts/check_template_merge.py [PROJECT_DIR]

Exit 1 listing every file that still holds git conflict markers (a line starting with seven
`<` or `>` and a space) and every `*.rej` file (hunks `cruft update` could not apply); exit 0
when there are none. PROJECT_DIR defaults to the project this script belongs to. Stdlib only,
so CI can run it before installing anything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

# Built, not written out, so this file does not contain the markers it looks for.
MARKERS = ("<" * 7 + " ", ">" * 7 + " ")
SKIP_DIRS = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".tox",
    ".nox",
    "dist",
    "build",
    "site-packages",
}
BINARY_SNIFF = 8192


def iter_files(root: Path) -> Iterator[Path]:
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.name not in SKIP_DIRS:
                    stack.append(entry)
            elif entry.is_file():
                yield entry


def conflict_lines(path: Path) -> list[int]:
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if b"\0" in data[:BINARY_SNIFF]:
        return []
    text = data.decode("utf-8", errors="replace")
    return [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(MARKERS)]


def find_problems(root: Path) -> list[str]:
    problems = []
    for path in iter_files(root):
        relative = path.relative_to(root).as_posix()
        if path.name.endswith(".rej"):
            problems.append(f"{relative}: hunks `cruft update` could not apply (apply, then delete)")
            continue
        lines = conflict_lines(path)
        if lines:
            shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
            problems.append(f"{relative}: conflict markers on line {shown}")
    return sorted(problems)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {Path(__file__).name} [PROJECT_DIR]", file=sys.stderr)
        return 2
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    problems = find_problems(root.resolve())
    if problems:
        print("Unfinished template merge (resolve, then commit):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("No conflict markers or *.rej files.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
