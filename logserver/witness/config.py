"""The witness configuration (`logserver witness --config witness.toml`).

    name     = "witness.example/w1"   # cosigner key name (tlog-cosignature: SHOULD be a schema-less URL)
    key      = "witness.key"          # or a list: ["witness-ed25519.key", "witness-mldsa44.key"]
                                      # PKCS#8 PEM, Ed25519 or ML-DSA-44, chmod 600 (`logserver keygen witness`)
    listen   = "127.0.0.1:7380"       # overridden by --listen
    data_dir = "witness-data"         # embedded PostgreSQL (default: ./witness-data beside the file)
    prefix   = ""                     # submission prefix path: POST <prefix>/add-checkpoint, <prefix>/sign-subtree
    monitoring_prefix = ""            # monitoring prefix path: GET <it>/<origin hash>/checkpoint (default: prefix)
    # database_url = "postgresql://..."   # overridden by $WITNESS_DATABASE_URL; unset = embedded

    [[logs]]                          # one table per log key followed; the origin is the vkey's name
    vkey = "example.com/log+0a1b2c3d+AU..."   # Ed25519 (0x01) or ML-DSA-44 (0x06) checkpoint key

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
from ..formats import Ed25519NoteVerifier, FormatError, MLDSA44CosignatureVerifier, verifier_from_vkey
from ..formats.vkey import SIG_TYPE_COSIGNATURE_MLDSA44, SIG_TYPE_ED25519, check_key_name

ENV_DATABASE_URL = "WITNESS_DATABASE_URL"
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")
# A log's checkpoint key: a NoteVerifier that also has the .vkey /status shows.
LogVerifier: TypeAlias = Ed25519NoteVerifier | MLDSA44CosignatureVerifier
LOG_KEY_TYPES = frozenset({SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_MLDSA44})
"""A log signs its checkpoints with a signed-note Ed25519 signature (0x01) and, as
tlog-checkpoint now recommends, an ML-DSA-44 cosignature of its own key (0x06)."""


@dataclass(frozen=True)
class WitnessConfig:
    name: str
    keys: tuple[Path, ...]
    data_dir: Path
    logs: tuple[tuple[str, tuple[LogVerifier, ...]], ...]  # (origin, its log keys), sorted by origin
    listen: str = "127.0.0.1:7380"
    prefix: str = ""
    monitoring_prefix: str = ""
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
    keys = _key_paths(r._get("key", True), base)
    data_dir = r.path("data_dir") or base / "witness-data"
    file_listen = r.string("listen")
    listen = listen or file_listen or "127.0.0.1:7380"
    parse_listen(listen, "listen")
    prefix = _prefix(r._get("prefix", False), "prefix", "")
    monitoring_prefix = _prefix(r._get("monitoring_prefix", False), "monitoring_prefix", prefix)
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
            # A log's checkpoint key: Ed25519 (0x01) or ML-DSA-44 (0x06). The log's own
            # Ed25519 cosignature/v1 line is its time stamp, never what a witness checks.
            verifier = verifier_from_vkey(vkey, LOG_KEY_TYPES)
            assert isinstance(verifier, (Ed25519NoteVerifier, MLDSA44CosignatureVerifier))
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
        name=name, keys=keys, data_dir=data_dir, listen=listen, prefix=prefix,
        monitoring_prefix=monitoring_prefix, database_url=database_url,
        logs=tuple(sorted((origin, tuple(v)) for origin, v in logs.items())),
        request_timeout_s=request_timeout_s, retry_after_s=retry_after_s,
    )


def _key_paths(value: object, base: Path) -> tuple[Path, ...]:
    """`key`: one path or a list of one or two (an Ed25519 and an ML-DSA-44 key)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not 1 <= len(items) <= 2 or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"key: want a key file path or a list of one or two, got {value!r}")
    paths = tuple(base / i for i in items)
    if len(set(paths)) != len(paths):
        raise ConfigError("key: the same file listed twice")
    return paths


def _prefix(value: object, what: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or _PREFIX.fullmatch(value) is None:
        raise ConfigError(f"{what}: want '' or a path like /witness (no trailing slash), got {value!r}")
    return value
