"""The errors a subcommand reports as one line, and the exit status of each kind.

The table of exit statuses is in docs/cli.md; `main` prints `logserver CMD: error:
MESSAGE` for each (a usage error also prints the subcommand's usage line first).
"""


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status `exit_code`."""

    exit_code = 1


class UsageError(CliError):
    """The command line itself is wrong (a missing or conflicting flag): exit 2, as argparse."""

    exit_code = 2


class DatabaseError(CliError):
    """The database cannot be reached or used: exit 3."""

    exit_code = 3


class ListenError(CliError):
    """The listen address cannot be bound (in use, not permitted): exit 4."""

    exit_code = 4


class FileAccessError(CliError):
    """A file or directory cannot be read or written: exit 5."""

    exit_code = 5


class TargetAccessError(CliError):
    """A publication target cannot be read (fsck --target: unreachable, permission denied): exit 6."""

    exit_code = 6
