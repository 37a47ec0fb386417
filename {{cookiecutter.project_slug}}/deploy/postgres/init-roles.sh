#!/bin/sh
# The compose stack's two database roles (docs/security.md, "Database roles"):
#   MCP_DB_OWNER   (mcp_owner)   owns the database and mcp_auth's tables: migrations and operator commands;
#   MCP_DB_RUNTIME (mcp_runtime) the server: only what `db upgrade --runtime-role` grants it.
# The image's superuser (POSTGRES_USER) stays for administration only.
#
# The postgres image runs this once, on the first start of an empty volume (/docker-entrypoint-initdb.d).
# Safe to run again, e.g. after changing a password or on a volume created before the two roles:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-init-roles.sh
# Passwords are read from the environment by psql itself (\getenv), never passed on a command line.
set -e

: "${MCP_DB_OWNER_PASSWORD:?set MCP_DB_OWNER_PASSWORD in .env (openssl rand -hex 24)}"
: "${MCP_DB_RUNTIME_PASSWORD:?set MCP_DB_RUNTIME_PASSWORD in .env (openssl rand -hex 24)}"
MCP_DB_OWNER="${MCP_DB_OWNER:-mcp_owner}"
MCP_DB_RUNTIME="${MCP_DB_RUNTIME:-mcp_runtime}"
database="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
export MCP_DB_OWNER MCP_DB_RUNTIME

psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$database" <<'SQL'
\getenv owner MCP_DB_OWNER
\getenv runtime MCP_DB_RUNTIME
\getenv owner_password MCP_DB_OWNER_PASSWORD
\getenv runtime_password MCP_DB_RUNTIME_PASSWORD
SELECT current_database() AS database \gset

SELECT format('CREATE ROLE %I', :'owner') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I', :'runtime') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'runtime') \gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'owner_password';
ALTER ROLE :"runtime" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'runtime_password';

ALTER DATABASE :"database" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"owner";
GRANT CONNECT ON DATABASE :"database" TO :"runtime";
-- Only the owner may create tables (PostgreSQL 15+ already keeps PUBLIC out of schema public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";

-- A volume created before the two roles: hand the existing tables (and their sequences) to the owner.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'owner')
  FROM pg_tables
 WHERE schemaname = 'public'
   AND tablename IN ('tokens', 'audit_log', 'api_keys', 'retired_encryption_keys', 'mcp_auth_alembic_version')
   AND tableowner <> :'owner' \gexec
SQL
echo "init-roles: roles $MCP_DB_OWNER (owner of $database) and $MCP_DB_RUNTIME (server) are ready"
