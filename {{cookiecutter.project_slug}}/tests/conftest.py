"""Your fixtures go here. mcp_auth's (cf_access, database_url, ...) come from the
``mcp_auth.testing.plugin`` pytest plugin enabled in pyproject.toml."""
