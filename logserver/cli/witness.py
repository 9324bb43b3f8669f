"""Run a C2SP tlog-witness server (docs/witness.md).

It cosigns checkpoints of the logs listed in the config, each only if it is
consistent with the last one it cosigned for that log, and keeps its state in
PostgreSQL (embedded in data_dir unless database_url or $WITNESS_DATABASE_URL).
Make its key with `logserver keygen witness --name NAME --out witness.key`.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..http import serving
from ..http.serving import ConnectionLimits
from ._args import listen_address

HELP = "run a tlog-witness server that cosigns log checkpoints"
EXAMPLES = """\
  logserver keygen witness --name witness.example/w1 --out witness.key
  logserver witness --config witness.toml
  logserver witness --config witness.toml --listen 127.0.0.1:7380
"""
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="witness config file (TOML); see docs/witness.md")
    p.add_argument("--listen", type=listen_address, metavar="HOST:PORT",
                   help="address to listen on (overrides the config)")


def run(args: argparse.Namespace) -> int:
    from ..witness import create_witness_app, load_witness_config

    config = load_witness_config(args.config, listen=args.listen)
    app = create_witness_app(config)
    host, port = config.host_port
    serving.serve(
        app, host, port, ConnectionLimits(),
        on_listening=lambda: log.info("witness %s listening on http://%s:%d%s", config.name, host, port, config.prefix),
    )
    return 0
