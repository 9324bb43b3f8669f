"""The server configuration: a TOML file, with environment overrides.

Every problem is reported as a ConfigError naming the key and what is wrong,
so a bad config stops start-up with one clear line. Relative paths in the file
are relative to the file's own directory.
"""
from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit, urlunsplit

from .bundle.authority import ROLES, Role

ENV_DATABASE_URL = "DATABASE_URL"
ENV_LISTEN = "LOGSERVER_LISTEN"

# Used with fullmatch: "$" would also match before a trailing newline.
_ORIGIN = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
_AUTHORITY_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # as bundle.authority and client.policy


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key and the problem."""


class DatabaseUrlError(ConfigError):
    """`database_url` / `DATABASE_URL` is not a PostgreSQL URL (the CLI's database exit status)."""


class UnreadableFileError(ConfigError):
    """A file the config names exists but cannot be read (permissions, a directory)."""


@dataclass(frozen=True)
class AuthorityConfig:
    name: str
    role: Role
    keys: tuple[Path, ...]


@dataclass(frozen=True)
class SequencerConfig:
    max_batch_size: int = 1024
    max_batch_delay_ms: float = 5.0
    max_pending: int = 20_000
    checkpoint_interval_s: float = 5.0
    lock_timeout_ms: int = 5_000
    stall_timeout_ms: int = 5_000
    commit_timeout_s: float = 30.0


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = 64 * 1024
    entries_page_size: int = 256
    entries_page_bytes: int = 1 << 20  # /v1/entries stops after the entry that crosses this
    request_timeout_s: float = 15.0
    retry_after_s: int = 1
    # Connections (logserver/http/serving.py): at most this many open at once; one that
    # sends no complete request head within header_timeout_s of opening is closed, and
    # so is one idle for keepalive_timeout_s after a response.
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0


@dataclass(frozen=True)
class WitnessingConfig:
    """How the log collects witness cosignatures (only with `witness_policy`)."""

    request_timeout_s: float = 5.0   # one witness round: all requests, 409 follow-ups included
    max_wait_s: float = 10.0         # a submitter waits this long for a cosigned checkpoint, then 503
    fail_open: bool = False          # publish checkpoints without a quorum (explicit opt-in)
    # Ask the witnesses to cosign the newest re-sign of the published size when its
    # cosignatures are this old (issue 20, freshness; docs/witness.md "Freshness").
    refresh_s: float = 60.0


# Publication target names: the progress row's key (migrations/0004) and a metric label.
_TARGET_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# S3 bucket names (AWS's rules, which the S3 look-alikes follow): 3-63 of [a-z0-9.-].
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
TARGET_TYPES = ("directory", "s3")


@dataclass(frozen=True)
class TargetConfig:
    """One static publication target (logserver/publish/, docs/deployment.md)."""

    name: str
    type: Literal["directory", "s3"]
    path: Path | None = None            # directory
    bucket: str | None = None           # s3
    endpoint_url: str | None = None     # s3; None: AWS's own endpoint for the region
    prefix: str = ""                    # s3: key prefix, "" or ending in "/"
    region: str = "us-east-1"           # s3


@dataclass(frozen=True)
class PublicationConfig:
    targets: tuple[TargetConfig, ...] = ()
    max_lag_s: float = 60.0  # /readyz answers 503 publication_behind past this
    min_interval_ms: float = 50.0  # a target's publication passes start at most this often
    # Every fleet's fleet-head proof is rewritten at most this often (when the published
    # checkpoint moved); a fleet whose head changed is written at the next pass. 0: no
    # fleet-head proofs on the targets (docs/fleet-heads.md, "Static publication").
    fleet_heads_interval_s: float = 60.0


@dataclass(frozen=True)
class Config:
    origin: str
    log_key: Path
    data_dir: Path
    # The log's ML-DSA-44 key (PKCS#8 PEM, seed form): with it every checkpoint also
    # carries an ML-DSA-44 subtree/v1 cosignature by the log (keys/log_key.py).
    log_key_mldsa44: Path | None = None
    listen: str = "127.0.0.1:8080"
    database_url: str | None = None
    authorities: tuple[AuthorityConfig, ...] = ()
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    witness_policy: Path | None = None
    witnessing: WitnessingConfig = field(default_factory=WitnessingConfig)
    publication: PublicationConfig = field(default_factory=PublicationConfig)
    # Where listen, database_url, data_dir and log_key came from, for messages:
    # "--listen", "LOGSERVER_LISTEN", "listen in /etc/logserver.toml", "the default ...".
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    tile_file: bool = True  # expanded level-0 tiles in data_dir/cache (64 bytes per leaf on disk); see tile_file.py
    verify_processes: int = 1  # submissions parsed and verified in helper processes (0: inline); see admission.py

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen, "listen")

    @property
    def checkpoint_file(self) -> Path:
        """Where the latest signed checkpoint is kept outside the database."""
        return self.data_dir / "latest-checkpoint"


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or str(int(port)) != port:
        raise ConfigError(f"{key}: want HOST:PORT such as 127.0.0.1:8080, got {value!r}")
    return host.strip("[]"), int(port)


def load_config(path: Path, *, environ: Mapping[str, str] | None = None, listen: str | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError.

    `listen` is the value of a `--listen` flag: it overrides the file and the
    environment, and a bad value is reported as `--listen`.
    """
    environ = os.environ if environ is None else environ
    path = Path(path)
    return config_from_dict(read_toml(path), base=path.parent, environ=environ, listen=listen, path=path)


def check_database_url(url: str, key: str) -> None:
    """Refuse what asyncpg would refuse only when connecting (a scheme but PostgreSQL's)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise DatabaseUrlError(
            f"{key}: want a URL beginning postgresql:// (e.g. postgresql://USER@HOST:5432/DATABASE), "
            f"got {redact_url(url)!r}, which has no scheme"
        )
    if scheme not in ("postgresql", "postgres"):
        raise DatabaseUrlError(
            f"{key}: want a postgresql:// or postgres:// URL (e.g. postgresql://USER@HOST:5432/DATABASE), "
            f"got scheme {scheme!r}"
        )


def redact_url(url: str) -> str:
    """`url` with its password, if any, replaced by *** (for messages and logs)."""
    has_scheme = "://" in url
    parts = urlsplit(url if has_scheme else "//" + url)  # USER:PASSWORD@ is found after //
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join("password=***" if q.partition("=")[0] == "password" else q
                     for q in parts.query.split("&")) if parts.query else ""
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return shown if has_scheme else shown.removeprefix("//")


def read_toml(path: Path) -> dict[str, Any]:
    """The top-level table of the TOML file `path`. Raises ConfigError."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def config_from_dict(raw: dict[str, Any], *, base: Path, environ: Mapping[str, str], listen: str | None = None,
                     path: Path | None = None) -> Config:
    r = TableReader(raw, "", base)
    origin = r.string("origin", required=True)
    if not _ORIGIN.fullmatch(origin) or origin == "cosignature/v1":
        raise ConfigError(
            f"origin: want 1-255 printable ASCII characters without spaces (e.g. example.com/log), got {origin!r}"
        )
    log_key = r.path("log_key", required=True)
    log_key_mldsa44 = r.path("log_key_mldsa44")
    in_file = f" in {path}" if path is not None else ""
    sources = {"log_key": f"log_key{in_file}"}
    data_dir = r.path("data_dir")
    sources["data_dir"] = (
        f"data_dir{in_file}" if data_dir else f"the default data_dir (data, next to {path or 'the config'})"
    )
    data_dir = data_dir or base / "data"
    # Read the file's values even when the environment overrides them, so they are
    # still validated and not reported as unknown keys.
    file_listen, file_database_url = r.string("listen"), r.string("database_url")
    if listen:
        sources["listen"] = "--listen"
    elif environ.get(ENV_LISTEN):
        listen, sources["listen"] = environ[ENV_LISTEN], ENV_LISTEN
    elif file_listen:
        listen, sources["listen"] = file_listen, f"listen{in_file}"
    else:
        listen, sources["listen"] = "127.0.0.1:8080", "the default listen address"
    parse_listen(listen, sources["listen"].split(" in ")[0])
    if file_database_url:
        check_database_url(file_database_url, "database_url")
    database_url = environ.get(ENV_DATABASE_URL) or file_database_url
    if environ.get(ENV_DATABASE_URL):
        check_database_url(environ[ENV_DATABASE_URL], ENV_DATABASE_URL)
        sources["database_url"] = ENV_DATABASE_URL
    elif file_database_url:
        sources["database_url"] = f"database_url{in_file}"
    witness_policy = r.path("witness_policy")
    verify_processes = r.integer("verify_processes", Config.verify_processes, 0, 64)
    tile_file = r.boolean("tile_file", Config.tile_file)

    authorities = []
    for i, item in enumerate(r.list("authorities")):
        if not isinstance(item, dict):
            raise ConfigError(f"authorities[{i}]: want a table, got {type(item).__name__}")
        a = TableReader(item, f"authorities[{i}].", base)
        name = a.string("name", required=True)
        if not _AUTHORITY_NAME.fullmatch(name):
            raise ConfigError(f"authorities[{i}].name: want 1..128 of [A-Za-z0-9._:-], got {name!r}")
        role = a.string("role", required=True)
        if role not in ROLES:
            raise ConfigError(f"authorities[{i}].role: want 'signer' or 'countersigner', got {role!r}")
        keys = a.list("keys", required=True)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(f"authorities[{i}].keys: want a non-empty list of PEM file paths")
        paths = tuple(base / k for k in keys)
        for k, p in zip(keys, paths, strict=True):
            if not p.is_file():
                raise ConfigError(f"authorities[{i}].keys: file {k!r} ({p}) does not exist")
        a.done()
        authorities.append(AuthorityConfig(name, role, paths))
    names = [a.name for a in authorities]
    if len(set(names)) != len(names):
        raise ConfigError(f"authorities: names must be unique, got {names}")
    for role in ROLES:
        if not any(a.role == role for a in authorities):
            raise ConfigError(f"authorities: want at least one authority with role {role!r}, got none")

    seq = TableReader(r.table("sequencer"), "sequencer.", base)
    d = SequencerConfig()
    sequencer = SequencerConfig(
        max_batch_size=seq.integer("max_batch_size", d.max_batch_size, 1, 100_000),
        max_batch_delay_ms=seq.number("max_batch_delay_ms", d.max_batch_delay_ms, 0, 10_000),
        max_pending=seq.integer("max_pending", d.max_pending, 1, 10_000_000),
        checkpoint_interval_s=seq.number("checkpoint_interval_s", d.checkpoint_interval_s, 0.05, 86_400),
        lock_timeout_ms=seq.integer("lock_timeout_ms", d.lock_timeout_ms, 10, 600_000),
        stall_timeout_ms=seq.integer("stall_timeout_ms", d.stall_timeout_ms, 100, 600_000),
        commit_timeout_s=seq.number("commit_timeout_s", d.commit_timeout_s, 1, 3600),
    )
    seq.done()
    lim = TableReader(r.table("limits"), "limits.", base)
    dl = LimitsConfig()
    limits = LimitsConfig(
        max_body_bytes=lim.integer("max_body_bytes", dl.max_body_bytes, 1024, 64 * 1024),
        entries_page_size=lim.integer("entries_page_size", dl.entries_page_size, 1, 1000),
        entries_page_bytes=lim.integer("entries_page_bytes", dl.entries_page_bytes, 64 << 10, 64 << 20),
        request_timeout_s=lim.number("request_timeout_s", dl.request_timeout_s, 0.1, 600),
        retry_after_s=lim.integer("retry_after_s", dl.retry_after_s, 1, 3600),
        max_connections=lim.integer("max_connections", dl.max_connections, 16, 1_000_000),
        header_timeout_s=lim.number("header_timeout_s", dl.header_timeout_s, 0.1, 600),
        keepalive_timeout_s=lim.number("keepalive_timeout_s", dl.keepalive_timeout_s, 0.1, 3600),
    )
    lim.done()
    wit = TableReader(r.table("witnessing"), "witnessing.", base)
    dw = WitnessingConfig()
    witnessing = WitnessingConfig(
        request_timeout_s=wit.number("request_timeout_s", dw.request_timeout_s, 0.1, 600),
        max_wait_s=wit.number("max_wait_s", dw.max_wait_s, 0.1, 3600),
        fail_open=wit.boolean("fail_open", dw.fail_open),
        refresh_s=wit.number("refresh_s", dw.refresh_s, 1, 86_400),
    )
    wit.done()
    publication = _publication(TableReader(r.table("publication"), "publication.", base))
    if witness_policy is not None and not witness_policy.is_file():
        raise ConfigError(f"witness_policy: file {witness_policy} does not exist")
    r.done()
    return Config(
        origin=origin, log_key=log_key, log_key_mldsa44=log_key_mldsa44, data_dir=data_dir, listen=listen,
        database_url=database_url,
        authorities=tuple(authorities), sequencer=sequencer, limits=limits, witness_policy=witness_policy,
        witnessing=witnessing, publication=publication, verify_processes=verify_processes, tile_file=tile_file,
        sources=sources,
    )


def _publication(r: TableReader) -> PublicationConfig:
    """[publication] and its [[publication.targets]] (docs/deployment.md)."""
    targets = []
    for i, item in enumerate(r.list("targets")):
        key = f"publication.targets[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: want a table, got {type(item).__name__}")
        t = TableReader(item, key + ".", r.base)
        name = t.string("name", required=True)
        if not _TARGET_NAME.fullmatch(name):
            raise ConfigError(f"{key}.name: want 1..64 of [A-Za-z0-9._-], got {name!r}")
        kind = t.string("type", required=True)
        if kind == "directory":
            target = TargetConfig(name, "directory", path=t.path("path", required=True))
        elif kind == "s3":
            bucket = t.string("bucket", required=True)
            if not _BUCKET.fullmatch(bucket):
                raise ConfigError(f"{key}.bucket: want an S3 bucket name (3-63 of [a-z0-9.-]), got {bucket!r}")
            endpoint = t.string("endpoint_url")
            if endpoint is not None:
                parts = urlsplit(endpoint)
                if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") \
                        or parts.query or parts.fragment:
                    raise ConfigError(f"{key}.endpoint_url: want http(s)://HOST[:PORT], got {endpoint!r}")
            prefix = t.string("prefix") or ""
            if prefix.startswith("/") or "//" in prefix or any(p in (".", "..") for p in prefix.split("/")):
                raise ConfigError(f"{key}.prefix: want a key prefix such as log/ (no leading /, no empty, "
                                  f". or .. segments), got {prefix!r}")
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            target = TargetConfig(name, "s3", bucket=bucket, endpoint_url=endpoint and endpoint.rstrip("/"),
                                  prefix=prefix, region=t.string("region") or "us-east-1")
        else:
            raise ConfigError(f"{key}.type: want one of {', '.join(TARGET_TYPES)}, got {kind!r}")
        t.done()
        targets.append(target)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"publication.targets: names must be unique, got {names}")
    d = PublicationConfig()
    config = PublicationConfig(tuple(targets), r.number("max_lag_s", d.max_lag_s, 1, 86_400),
                               r.number("min_interval_ms", d.min_interval_ms, 0, 10_000),
                               r.number("fleet_heads_interval_s", d.fleet_heads_interval_s, 0, 86_400))
    r.done()
    return config


def check_private_key_file(path: Path, key: str) -> bytes:
    """Read a private key file, refusing one that others can read. Returns its bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{key}: file {path} does not exist") from None
    except OSError as e:  # a directory on the way is unreadable, a loop of symlinks...
        raise UnreadableFileError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{key}: private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:
        return path.read_bytes()
    except PermissionError as e:
        user = user_name()
        raise UnreadableFileError(
            f"{key}: cannot read {path}: {e.strerror}; this process runs as user {user}: make the "
            f"file theirs (`chown {user} {path}`, keeping mode 0600) or run as its owner"
        ) from None
    except OSError as e:
        raise UnreadableFileError(f"{key}: cannot read {path}: {e.strerror or e}; want a key file") from None


def user_name() -> str:
    """This process's user, for messages that say whose a file or directory must be."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid()) if hasattr(os, "geteuid") else "this user"


class TableReader:
    """Typed access to one TOML table that remembers which keys were used (the log's
    config and the witness's, logserver/witness/config.py)."""

    def __init__(self, raw: dict[str, Any], prefix: str, base: Path) -> None:
        self.raw, self.prefix, self.base = raw, prefix, base
        self.seen: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            if required:
                raise ConfigError(f"{self.prefix}{key}: required but missing")
            return None
        return self.raw[key]

    # A required key is never None: the overloads say so to the type checker.
    @overload
    def string(self, key: str, required: Literal[True]) -> str: ...
    @overload
    def string(self, key: str, required: bool = False) -> str | None: ...

    def string(self, key: str, required: bool = False) -> str | None:
        v = self._get(key, required)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"{self.prefix}{key}: want a non-empty string, got {v!r}")
        return v

    @overload
    def path(self, key: str, required: Literal[True]) -> Path: ...
    @overload
    def path(self, key: str, required: bool = False) -> Path | None: ...

    def path(self, key: str, required: bool = False) -> Path | None:
        v = self.string(key, required)
        return None if v is None else self.base / v

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self._get(key, False)
        if v is None:
            return default
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"{self.prefix}{key}: want an integer from {lo} to {hi}, got {v!r}")
        return v

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self._get(key, False)
        if v is None:
            return default
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
            raise ConfigError(f"{self.prefix}{key}: want a number from {lo} to {hi}, got {v!r}")
        return float(v)

    def boolean(self, key: str, default: bool) -> bool:
        v = self._get(key, False)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(f"{self.prefix}{key}: want true or false, got {v!r}")
        return v

    def list(self, key: str, required: bool = False) -> list:
        v = self._get(key, required)
        if v is None:
            return []
        if not isinstance(v, list):
            raise ConfigError(f"{self.prefix}{key}: want a list, got {type(v).__name__}")
        return v

    def table(self, key: str) -> dict:
        v = self._get(key, False)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ConfigError(f"{self.prefix}{key}: want a table, got {type(v).__name__}")
        return v

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise ConfigError(f"{self.prefix}{unknown[0]}: unknown key")
