class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 1."""
