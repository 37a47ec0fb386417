"""The MCP server's own code: the app (``app.py``), its tools (``tools/``) and the console
script (``cli.py``); the names the template baked in live in ``project.py``."""
