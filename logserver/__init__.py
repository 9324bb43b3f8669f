"""logserver: an append-only transparency log for dual-signed fleet validation bundles."""

__version__ = "0.3.0.dev0"
