"""The HTTP side: the app (/mcp, /health, /status) and the ASGI steps every request passes.

Request path: ``app`` -> ``authentication`` (who is calling: 401/503) -> ``token_resolution``
(``tools/call`` only: the upstream token, audited: 503) -> FastMCP -> the tool.
"""
