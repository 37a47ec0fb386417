"""Reading a bulk token import: JSON lines or CSV of (service, key, value), checked row by row.

Everything is checked before anything is written, so one bad line refuses the whole import. The
names are checked as ``tokens set`` checks its arguments. A message names the line (or row) and
the token's names, never its value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Literal

Format = Literal["jsonl", "csv"]
Row = tuple[str, str, str]
"""(service, key, value)"""

FIELDS = ("service", "key", "value")
MAX_NAME = 255  # the tokens.service_id and tokens.key columns


class InvalidTokenRow(ValueError):
    """A row that cannot be imported; ``number`` is its line (stdin) or its 1-based row (API)."""

    def __init__(self, number: int, problem: str, *, unit: str = "row") -> None:
        super().__init__(f"{unit} {number}: {problem}")
        self.number = number


def _encodes(text: str) -> bool:
    # A lone surrogate (JSON "\ud800", undecodable argv bytes) has no UTF-8 form: it would fail
    # half-way through the write instead of here.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(label: str, name: str) -> str | None:
    """Why ``name`` cannot be a SERVICE or KEY (``label``), or None when it can."""
    if not name.strip() or len(name) > MAX_NAME:
        return f"{label} must be 1 to {MAX_NAME} characters"
    if "\x00" in name or not _encodes(name):  # PostgreSQL text cannot hold NUL
        return f"{label} must be UTF-8 text without NUL characters"
    return None


def row_problem(service: str, key: str, value: str) -> str | None:
    """Why (service, key, value) cannot be stored, or None when it can (the value is not shown)."""
    problem = name_problem("service", service) or name_problem("key", key)
    if problem is not None:
        return problem
    if not value:
        return f"the value of {service}/{key} is empty"
    if not _encodes(value):
        return f"the value of {service}/{key} is not valid UTF-8 text"
    return None


def check_rows(rows: Iterable[object], *, unit: str = "row") -> list[Row]:
    """The rows as a list, once each passed ``row_problem`` and no (service, key) repeats;
    InvalidTokenRow names the first that did not (numbered from 1)."""
    return _checked(enumerate(rows, 1), unit)


def _checked(numbered: Iterable[tuple[int, object]], unit: str) -> list[Row]:
    seen: dict[tuple[str, str], int] = {}
    checked: list[Row] = []
    for number, row in numbered:
        if not (isinstance(row, tuple) and len(row) == 3 and all(isinstance(field, str) for field in row)):
            raise InvalidTokenRow(number, "expected a (service, key, value) tuple of strings", unit=unit)
        service, key, value = row
        problem = row_problem(service, key, value)
        if problem is not None:
            raise InvalidTokenRow(number, problem, unit=unit)
        first = seen.setdefault((service, key), number)
        if first != number:
            raise InvalidTokenRow(number, f"{service}/{key} is already on {unit} {first}", unit=unit)
        checked.append((service, key, value))
    return checked


def detect(text: str) -> Format:
    """JSON lines when the first non-blank line starts with ``{``, else CSV."""
    for line in text.split("\n"):
        if line.strip():
            return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


def parse(text: str, format: Format | None = None) -> list[Row]:
    """The checked rows of an import (``format`` None: ``detect``); InvalidTokenRow names the
    line (counted from 1, as an editor does) of the first problem."""
    numbered = _json_lines(text) if (format or detect(text)) == "jsonl" else _csv_records(text)
    return _checked(numbered, "line")


def _json_lines(text: str) -> Iterator[tuple[int, Row]]:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends unescaped.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            # exc.msg is a fixed description; the line itself (exc.doc) may hold the value.
            raise InvalidTokenRow(number, f"malformed JSON ({exc.msg} at column {exc.colno})", unit="line") from None
        yield number, _json_row(number, item)


def _json_row(number: int, item: object) -> Row:
    if not isinstance(item, dict):
        raise InvalidTokenRow(number, 'expected an object {"service": ..., "key": ..., "value": ...}', unit="line")
    missing = [name for name in FIELDS if name not in item]
    if missing:
        raise InvalidTokenRow(number, f"missing field {', '.join(missing)}", unit="line")
    extra = sorted(str(name) for name in item if name not in FIELDS)
    if extra:
        raise InvalidTokenRow(number, f"unexpected field {extra[0][:40]!r} (expected service, key, value)", unit="line")
    fields = [item[name] for name in FIELDS]
    for name, field in zip(FIELDS, fields, strict=True):
        if not isinstance(field, str):
            raise InvalidTokenRow(number, f"{name} must be a string", unit="line")
    return fields[0], fields[1], fields[2]


def _csv_records(text: str) -> Iterator[tuple[int, Row]]:
    """(first line, row) of each record; blank lines skipped, an optional header row first."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end, header_allowed = 0, True
    while True:
        start = end + 1  # a quoted field may span lines: a record is named by its first
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the csv module's messages never quote the data
            raise InvalidTokenRow(start, f"malformed CSV ({exc})", unit="line") from None
        end = reader.line_num
        if len(record) <= 1 and not "".join(record).strip():
            continue
        if header_allowed and [field.strip().lower() for field in record] == list(FIELDS):
            header_allowed = False
            continue
        header_allowed = False
        if len(record) != len(FIELDS):
            raise InvalidTokenRow(start, f"expected 3 fields (service,key,value), found {len(record)}", unit="line")
        yield start, (record[0], record[1], record[2])
