"""Test helpers shipped with mcp_auth: loopback fakes of Cloudflare Access and Infisical, the
console script as a real process (``processes``), and pytest fixtures
(``-p mcp_auth.testing.plugin``). They speak the real wire formats so tests run the production
code paths. Nothing here is imported by the server."""
