"""The witness configuration (`logserver witness --config witness.toml`).

    name     = "witness.example/w1"   # cosigner key name (tlog-cosignature: SHOULD be a schema-less URL)
    key      = "witness.key"          # Ed25519 PKCS#8 PEM, chmod 600 (`logserver keygen witness`)
    listen   = "127.0.0.1:7380"       # overridden by --listen
    data_dir = "witness-data"         # embedded PostgreSQL (default: ./witness-data beside the file)
    prefix   = ""                     # submission prefix path: POST <prefix>/add-checkpoint
    # database_url = "postgresql://..."   # overridden by $WITNESS_DATABASE_URL; unset = embedded

    [[logs]]                          # one table per log key followed; the origin is the vkey's name
    vkey = "example.com/log+0a1b2c3d+AU..."

Relative paths are relative to the file. Problems raise ConfigError naming the key.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from ..config import ConfigError, TableReader, parse_listen, read_toml
from ..formats import CosignatureVerifier, Ed25519NoteVerifier, FormatError, verifier_from_vkey
from ..formats.vkey import SIG_TYPE_ED25519, check_key_name

ENV_DATABASE_URL = "WITNESS_DATABASE_URL"
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# What verifier_from_vkey builds: a NoteVerifier that also has the .vkey /status shows.
LogVerifier: TypeAlias = Ed25519NoteVerifier | CosignatureVerifier


@dataclass(frozen=True)
class WitnessConfig:
    name: str
    key: Path
    data_dir: Path
    logs: tuple[tuple[str, tuple[LogVerifier, ...]], ...]  # (origin, its log keys), sorted by origin
    listen: str = "127.0.0.1:7380"
    prefix: str = ""
    database_url: str | None = None
    request_timeout_s: float = 15.0
    retry_after_s: int = 1

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen, "listen")

    def log_verifiers(self) -> dict[str, tuple[LogVerifier, ...]]:
        return dict(self.logs)


def load_witness_config(path: Path, *, listen: str | None = None,
                        environ: Mapping[str, str] | None = None) -> WitnessConfig:
    environ = os.environ if environ is None else environ
    path = Path(path)
    return witness_config_from_dict(read_toml(path), base=path.parent, listen=listen, environ=environ)


def witness_config_from_dict(raw: dict[str, Any], *, base: Path, listen: str | None = None,
                             environ: Mapping[str, str] | None = None) -> WitnessConfig:
    environ = {} if environ is None else environ
    r = TableReader(raw, "", base)
    name = r.string("name", required=True)
    try:
        check_key_name(name)
    except FormatError as e:
        raise ConfigError(f"name: {e}") from None
    key = r.path("key", required=True)
    data_dir = r.path("data_dir") or base / "witness-data"
    file_listen = r.string("listen")
    listen = listen or file_listen or "127.0.0.1:7380"
    parse_listen(listen, "listen")
    prefix = r._get("prefix", False) or ""
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise ConfigError(f"prefix: want '' or a path like /witness (no trailing slash), got {prefix!r}")
    database_url = environ.get(ENV_DATABASE_URL) or r.string("database_url")
    request_timeout_s = r.number("request_timeout_s", 15.0, 0.1, 600)
    retry_after_s = r.integer("retry_after_s", 1, 1, 3600)
    logs: dict[str, list[LogVerifier]] = {}
    seen_keys: set[str] = set()
    for i, item in enumerate(r.list("logs", required=True)):
        if not isinstance(item, dict):
            raise ConfigError(f"logs[{i}]: want a table, got {type(item).__name__}")
        t = TableReader(item, f"logs[{i}].", base)
        vkey = t.string("vkey", required=True)
        t.done()
        try:
            # A log's checkpoint key: the plain signed-note Ed25519 type. The log's own
            # cosignature/v1 line is its time stamp, never what a witness checks.
            verifier = verifier_from_vkey(vkey, frozenset({SIG_TYPE_ED25519}))
        except FormatError as e:
            raise ConfigError(f"logs[{i}].vkey: {e}") from None
        if vkey in seen_keys:
            raise ConfigError(f"logs[{i}].vkey: listed twice")
        seen_keys.add(vkey)
        logs.setdefault(verifier.name, []).append(verifier)
    if not logs:
        raise ConfigError("logs: want at least one [[logs]] table with the vkey of a log to witness")
    r.done()
    return WitnessConfig(
        name=name, key=key, data_dir=data_dir, listen=listen, prefix=prefix, database_url=database_url,
        logs=tuple(sorted((origin, tuple(v)) for origin, v in logs.items())),
        request_timeout_s=request_timeout_s, retry_after_s=retry_after_s,
    )
