"""The composition root: assembles the log's aiohttp app and runs its lifecycle."""
from .app import create_app

__all__ = ["create_app"]
