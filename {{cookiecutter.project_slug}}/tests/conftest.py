"""Your fixtures go here. mcp_auth's come from the ``mcp_auth.testing.plugin`` pytest plugin
enabled in pyproject.toml: ``project`` and ``create_app`` (this project, named by the
``mcp_auth_project`` / ``mcp_auth_app_factory`` options there), ``database`` (PostgreSQL and
SQLite), ``database_url``, ``sqlite_url``, ``cf_access``, ... Process helpers (free_port,
start_console_script, wait_healthy) are in ``mcp_auth.testing.processes``."""
