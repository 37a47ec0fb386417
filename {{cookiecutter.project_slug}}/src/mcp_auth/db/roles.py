"""PostgreSQL roles: the owner migrates, the server runs as a runtime role with only what it needs.

``grant_runtime_privileges`` is what ``<slug> db upgrade --runtime-role NAME`` runs after the
migrations, in the same transaction: it first revokes everything NAME holds on mcp_auth's tables,
then grants exactly ``RUNTIME_PRIVILEGES`` (so running it again, or after a migration, is safe),
and finally checks that NAME does not hold more through another role or PUBLIC. What the server
does with them: the token lookup reads ``tokens`` and appends to ``audit_log`` (the chain trigger
runs as the inserting role and reads the chain head); the API-key verifier reads ``api_keys`` and
touches ``last_used_at``; writers check ``retired_encryption_keys``; the start-up schema check
reads the Alembic version tables. Nothing else: no UPDATE, DELETE or TRUNCATE on ``audit_log``,
no ownership (so no ALTER TABLE ... DISABLE TRIGGER), no writes to ``tokens``.

``privilege_warning`` tells a running server that its own role could rewrite the audit log.
"""

from __future__ import annotations

from mcp_auth.db.migrations import PROJECT_VERSION_TABLE, VERSION_TABLE
from mcp_auth.errors import ConfigError
from sqlalchemy import text
from sqlalchemy.engine import Connection

RUNTIME_PRIVILEGES: dict[str, str] = {
    "audit_log": "SELECT, INSERT",
    "tokens": "SELECT",
    "api_keys": "SELECT, UPDATE (last_used_at)",
    "retired_encryption_keys": "SELECT",
    VERSION_TABLE: "SELECT",
    PROJECT_VERSION_TABLE: "SELECT",  # only when the project's own migrations created it
}
"""Table -> the privileges the runtime role gets on it (and nothing else)."""

_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_SEQUENCES = (("tokens", "id"), ("api_keys", "id"))


def _allowed(privileges: str) -> set[str]:
    """``"SELECT, UPDATE (last_used_at)"`` -> the table-level ones: ``{"SELECT"}``."""
    return {part.strip() for part in privileges.split(",") if "(" not in part}


def grant_runtime_privileges(conn: Connection, role: str) -> None:
    """Give ``role`` exactly RUNTIME_PRIVILEGES on mcp_auth's tables (ConfigError when it cannot)."""
    _refuse_unsuitable(conn, role)

    grantee = _quote(conn, role)
    schema = conn.execute(
        text(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass('audit_log')"
        )
    ).scalar_one()
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {_quote(conn, schema)} TO {grantee}")
    for table, privileges in RUNTIME_PRIVILEGES.items():
        if not _exists(conn, schema, table):
            continue
        qualified = f"{_quote(conn, schema)}.{_quote(conn, table)}"
        # REVOKE ALL also drops column privileges: what is left afterwards is exactly the GRANT.
        conn.exec_driver_sql(f"REVOKE ALL ON TABLE {qualified} FROM {grantee}")
        conn.exec_driver_sql(f"GRANT {privileges} ON TABLE {qualified} TO {grantee}")
    for table, column in _SEQUENCES:
        qualified = f"{_quote(conn, schema)}.{_quote(conn, table)}"
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": qualified, "column": column}
        ).scalar_one_or_none()
        if sequence is not None:  # already quoted by PostgreSQL
            conn.exec_driver_sql(f"REVOKE ALL ON SEQUENCE {sequence} FROM {grantee}")
    _check_nothing_more(conn, role, schema)


def _refuse_unsuitable(conn: Connection, role: str) -> None:
    """ConfigError unless ``role`` exists and is an ordinary role apart from the tables' owner."""
    if conn.dialect.name != "postgresql":
        raise ConfigError("--runtime-role needs PostgreSQL")
    if not role.strip():
        raise ConfigError("--runtime-role needs a role name")
    found = conn.execute(
        text("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if found is None:
        raise ConfigError(
            f"role {role!r} does not exist: create it first as a superuser, e.g. "
            f"CREATE ROLE {_quote(conn, role)} LOGIN PASSWORD '<password>'"
        )
    if found.rolsuper or found.rolcreaterole:
        # CREATEROLE could grant itself the owner role (PostgreSQL <= 15) and disable the triggers.
        what = "a superuser" if found.rolsuper else "allowed to CREATEROLE"
        raise ConfigError(f"role {role!r} is {what}: the runtime role must be an ordinary LOGIN role")
    owner = conn.execute(
        text("SELECT pg_has_role(:role, c.relowner, 'MEMBER') FROM pg_class c WHERE c.oid = to_regclass('audit_log')"),
        {"role": role},
    ).scalar_one_or_none()
    if owner is None:
        raise ConfigError("audit_log does not exist: the migrations did not run")
    if owner:
        raise ConfigError(
            f"role {role!r} owns the mcp_auth tables (or is a member of their owner): "
            "the runtime role must be a different role from the one that migrates"
        )


def _check_nothing_more(conn: Connection, role: str, schema: str) -> None:
    """The grants are table-level, but a role also holds what PUBLIC and its other roles hold."""
    for table, privileges in RUNTIME_PRIVILEGES.items():
        if not _exists(conn, schema, table):
            continue
        extra = [
            privilege
            for privilege in _TABLE_PRIVILEGES
            if privilege not in _allowed(privileges)
            and conn.execute(
                text("SELECT has_table_privilege(:role, :table, :privilege)"),
                {"role": role, "table": f"{_quote(conn, schema)}.{_quote(conn, table)}", "privilege": privilege},
            ).scalar_one()
        ]
        if extra:
            raise ConfigError(
                f"role {role!r} still has {', '.join(extra)} on {table} through PUBLIC or another role: "
                "revoke that grant, then run this again"
            )


def privilege_warning(conn: Connection) -> str | None:
    """A warning when this connection's role can rewrite the audit log, else None.

    True for a superuser, the owner of ``audit_log`` (or a member of the owner role: it could
    disable the triggers), or a role holding UPDATE, DELETE or TRUNCATE on it. None on SQLite
    and before the migrations ran. Names no role, host or database.
    """
    if conn.dialect.name != "postgresql":
        return None
    row = conn.execute(
        text(
            "SELECT r.rolsuper AS superuser, pg_has_role(current_user, c.relowner, 'USAGE') AS owner, "
            "has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE') AS rewrite "
            "FROM pg_roles r CROSS JOIN pg_class c "
            "WHERE r.rolname = current_user AND c.oid = to_regclass('audit_log')"
        )
    ).first()
    if row is None:
        return None
    advice = "connect the server as a runtime role (see `db upgrade --runtime-role`)"
    if row.superuser:
        return f"the server's database role is a superuser: it can rewrite or truncate the audit log; {advice}"
    if row.owner:
        return f"the server's database role owns the audit_log table: it can disable its triggers; {advice}"
    if row.rewrite:
        return f"the server's database role may UPDATE, DELETE or TRUNCATE audit_log; {advice}"
    return None


def _quote(conn: Connection, name: str) -> str:
    """A quoted identifier (always quoted: any name, even with quotes in it, stays one identifier)."""
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _exists(conn: Connection, schema: str, table: str) -> bool:
    found = conn.execute(
        text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{_quote(conn, schema)}.{_quote(conn, table)}"}
    ).scalar_one()
    return bool(found)


def describe_runtime_privileges() -> str:
    """One line for the operator: what the runtime role may do."""
    return "; ".join(f"{privileges} on {table}" for table, privileges in RUNTIME_PRIVILEGES.items())
