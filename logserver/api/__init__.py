"""HTTP API (aiohttp): the routes only. The app is assembled in logserver.server."""
