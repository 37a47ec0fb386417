"""Logs are JSON and never carry a secret, even when code logs one by mistake."""

from __future__ import annotations

import io
import json
import logging

import pytest
from mcp_auth.logs import JsonFormatter, RedactingFilter, register_secret


def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_lines_are_json_with_extra_fields() -> None:
    logger, stream = capture()
    logger.info("hello %s", "world", extra={"remote_addr": "10.0.0.1"})
    line = json.loads(stream.getvalue())
    assert line["message"] == "hello world" and line["remote_addr"] == "10.0.0.1" and line["level"] == "info"


def test_registered_secret_is_redacted_everywhere() -> None:
    register_secret("sup3r-secret-upstream-token")
    logger, stream = capture()
    logger.info("token is %s", "sup3r-secret-upstream-token", extra={"detail": "x sup3r-secret-upstream-token"})
    assert "sup3r-secret" not in stream.getvalue()
    assert "[REDACTED]" in stream.getvalue()


def test_credential_shapes_are_redacted_without_registration() -> None:
    logger, stream = capture()
    logger.warning("Authorization: Bearer abcdefghijklmnop1234")
    logger.warning("jwt eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImEifQ.c2lnbmF0dXJl")
    logger.warning("key mcpk_AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    logger.warning("dsn postgresql://app:pa55word@db:5432/app")
    out = stream.getvalue()
    for leaked in ("abcdefghijklmnop1234", "eyJlbWFpbCI6ImEifQ", "mcpk_AAAA", "pa55word"):
        assert leaked not in out
    assert "postgresql://app:[REDACTED]@db:5432/app" in out


def test_exception_text_is_redacted_and_traceback_dropped() -> None:
    register_secret("leaky-secret-in-exception")
    logger, stream = capture()
    try:
        raise ValueError("boom leaky-secret-in-exception")
    except ValueError:
        logger.exception("failed")
    out = stream.getvalue()
    assert "leaky-secret" not in out and "ValueError" in out


@pytest.mark.parametrize(
    ("text", "password"),
    [
        ("postgresql://app:hunter2-pw@db:5432/app", "hunter2-pw"),
        ("postgresql://:empty-user-pw@db/app", "empty-user-pw"),
        ("postgresql+psycopg://app:p@ss@w0rd@db.internal:5432/app", "p@ss@w0rd"),
        ("dsn host=db user=app password=kw-secret-1 dbname=app", "kw-secret-1"),
        ("dsn host=db password='quoted secret 2' dbname=app", "quoted secret 2"),
        ('{"password": "x", "dsn": "password = spaced-secret-3"}', "spaced-secret-3"),
        ("postgresql://db/app?user=app&password=query-secret-4&sslmode=require", "query-secret-4"),
        ("PGPASSWORD=env-secret-5 psql", "env-secret-5"),
    ],
)
def test_database_passwords_are_redacted_in_every_form(text: str, password: str) -> None:
    logger, stream = capture()
    logger.warning("connecting with %s", text, extra={"url": text})
    output = stream.getvalue()
    assert password not in output
    assert not [part for part in password.split() if len(part) > 6 and part in output], output
    assert "[REDACTED]" in output
    assert "connecting with" in output, "only the password goes, not the rest of the line"
