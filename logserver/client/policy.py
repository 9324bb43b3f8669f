"""`TrustPolicy`: what a client trusts. Two parts:

* the bundle authorities (signer and countersigner keys), in the format of the server
  configuration's `[[authorities]]` tables (docs/formats.md, "Authority keys");
* a C2SP tlog-policy (`log <vkey> [url]`, `witness ...`, `group ...`, `quorum ...`):
  the logs whose checkpoints are trusted and the witness quorum they need.

`authorities_toml` writes the `[[authorities]]` tables, for a trust policy and for a
server configuration alike (`serve --dev`, the tests and the bench use it).

On disk it is a small TOML file (docs/client.md, "Trust policy"):

    tlog_policy = "log.policy"      # path of the tlog-policy file, relative to this file
    max_age_s = 3600                # optional: the oldest fleet-head proof to accept (docs/fleet-heads.md)
    require_log_mldsa44 = true      # optional: every checkpoint needs the log's ML-DSA-44 signature

    [[authorities]]
    name = "signer-inc"
    role = "signer"
    keys = ["signer.pub.pem"]

    [[authorities]]
    name = "counter-corp"
    role = "countersigner"
    keys = ["counter.pub.pem"]
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import AuthorityKey, AuthoritySet, Role, load_authority_key_pem
from ..bundle.errors import AuthorityConfigError
from ..formats import (
    CosignatureVerifier,
    Ed25519NoteVerifier,
    FormatError,
    MLDSA44CosignatureVerifier,
    Policy,
    parse_policy,
)
from ..formats.tlog_policy import PolicyLog

_ROLES = ("signer", "countersigner")
_AUTHORITY_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TOP_KEYS = frozenset({"tlog_policy", "authorities", "max_age_s", "require_log_mldsa44"})
# A year, far above any useful freshness bound (docs/fleet-heads.md, "Freshness,
# re-signing and witness rate limits"): a larger value is a mistake, such as
# milliseconds written for seconds.
MAX_MAX_AGE_S = 366 * 24 * 3600
_AUTHORITY_KEYS = frozenset({"name", "role", "keys"})


class TrustPolicyError(ValueError):
    """The trust policy (TOML file, PEM keys or tlog-policy) is unusable; the message
    names the key or line."""


@dataclass(frozen=True)
class TrustPolicy:
    """Pinned bundle authorities plus a parsed C2SP tlog-policy; `max_age_s`, when set,
    is how old (in seconds) a fleet-head proof's checkpoint may be (docs/fleet-heads.md,
    "A verifier checks", freshness)."""

    authorities: AuthoritySet
    tlog: Policy
    max_age_s: int | None = None
    # "Post-quantum required": a checkpoint is accepted only with a verified ML-DSA-44
    # (type 0x06) signature by a key the tlog-policy lists for its origin. tlog-policy has
    # no such line, so it lives here, beside it (docs/client.md, "Post-quantum").
    require_log_mldsa44: bool = False

    def __post_init__(self) -> None:
        if self.max_age_s is not None and (
            type(self.max_age_s) is not int or not 1 <= self.max_age_s <= MAX_MAX_AGE_S
        ):
            raise TrustPolicyError(f"max_age_s: got {self.max_age_s!r}, want an integer of seconds in "
                                   f"[1, {MAX_MAX_AGE_S}]")
        if not self.tlog.logs:
            raise TrustPolicyError("tlog-policy: got no log line, want at least one trusted log")
        if type(self.require_log_mldsa44) is not bool:
            raise TrustPolicyError(f"require_log_mldsa44: got {self.require_log_mldsa44!r}, want true or false")
        if self.require_log_mldsa44:
            for log_origin in self.tlog.logs:
                if not self.mldsa44_log_verifiers(log_origin):
                    raise TrustPolicyError(
                        f"require_log_mldsa44: the tlog-policy lists no ML-DSA-44 key (a type 0x06 vkey) for "
                        f"log {log_origin!r}, want a second `log` line with the key from its /v1/log verifier_keys"
                    )
        log_keys = {
            _public_key(log.verifier): origin for origin, logs in self.tlog.logs.items() for log in logs
        }
        for name, witness in self.tlog.witnesses.items():
            origin = log_keys.get(witness.verifier.public_key_bytes)
            if origin is not None:
                # The log signs every checkpoint with a cosignature/v1 line of its own key
                # (docs/architecture.md, "Log signatures"): such a witness would count the
                # log's own time stamp as an independent witness.
                raise TrustPolicyError(
                    f"tlog-policy: witness {name!r} uses the key of log {origin!r}, want an independent key"
                )

    def log_for(self, origin: str) -> tuple[PolicyLog, ...]:
        """The policy's logs with this origin (empty if none)."""
        return self.tlog.logs.get(origin, ())

    def timestamp_verifiers(self, origin: str) -> list[CosignatureVerifier]:
        """The cosignature/v1 verifiers of the log's own signed-time line, one per Ed25519
        log key of `origin` (same key and name, signature type 0x04)."""
        out = []
        for log in self.log_for(origin):
            if isinstance(log.verifier, Ed25519NoteVerifier):
                out.append(CosignatureVerifier(log.origin, log.verifier.public_key))
        return out

    def mldsa44_log_verifiers(self, origin: str) -> list[MLDSA44CosignatureVerifier]:
        """The ML-DSA-44 (type 0x06) keys the policy lists for the log `origin`."""
        return [log.verifier for log in self.log_for(origin) if isinstance(log.verifier, MLDSA44CosignatureVerifier)]

    @classmethod
    def from_parts(
        cls, authorities: Sequence[AuthorityKey] | AuthoritySet, tlog_policy: bytes | str, *,
        max_age_s: int | None = None, require_log_mldsa44: bool = False,
    ) -> TrustPolicy:
        """Build from authority keys and the tlog-policy text (and the fleet-head max age,
        and whether the log's ML-DSA-44 signature is required)."""
        try:
            authority_set = authorities if isinstance(authorities, AuthoritySet) else AuthoritySet(authorities)
        except AuthorityConfigError as exc:
            raise TrustPolicyError(f"authorities: {exc}") from None
        try:
            tlog = parse_policy(tlog_policy)
        except FormatError as exc:
            raise TrustPolicyError(f"tlog-policy: {exc}") from None
        return cls(authority_set, tlog, max_age_s, require_log_mldsa44)

    @classmethod
    def load(cls, path: Path | str) -> TrustPolicy:
        """Load the TOML trust policy file (relative paths are relative to it)."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TrustPolicyError(f"trust policy {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TrustPolicyError(f"trust policy {path}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, base=path.parent)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base: Path) -> TrustPolicy:
        """Build from the parsed TOML document; file names are relative to `base`."""
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise TrustPolicyError(
                f"{unknown[0]}: unknown key, want tlog_policy, [[authorities]], max_age_s and require_log_mldsa44")
        policy_file = raw.get("tlog_policy")
        if not isinstance(policy_file, str) or not policy_file:
            raise TrustPolicyError(f"tlog_policy: got {policy_file!r}, want the path of a tlog-policy file")
        try:
            tlog_text = (base / policy_file).read_bytes()
        except OSError as exc:
            raise TrustPolicyError(f"tlog_policy: {base / policy_file}: {exc.strerror or exc}") from None
        tables = raw.get("authorities")
        if not isinstance(tables, list) or not tables:
            raise TrustPolicyError("authorities: want [[authorities]] tables (at least a signer and a countersigner)")
        keys = []
        for i, table in enumerate(tables):
            keys.extend(_authority_keys(i, table, base))
        # Checked with the rest in __post_init__ (a TOML boolean is not an integer there).
        return cls.from_parts(keys, tlog_text, max_age_s=raw.get("max_age_s"),
                              require_log_mldsa44=raw.get("require_log_mldsa44", False))


def authorities_toml(authorities: Iterable[tuple[str, Role, Sequence[str | Path]]]) -> str:
    """The `[[authorities]]` tables, one per (name, role, PEM key files), as TOML text:
    the same tables in a trust policy file and in the server's configuration."""
    tables = []
    for name, role, keys in authorities:
        files = ", ".join(_toml_string(str(k)) for k in keys)
        tables.append(f"[[authorities]]\nname = {_toml_string(name)}\nrole = {_toml_string(role)}\nkeys = [{files}]\n")
    return "\n".join(tables)


def _toml_string(value: str) -> str:
    # A TOML basic string: '"' and '\\' escaped, and the control characters, which
    # TOML 1.0 does not allow unescaped (U+0000..U+001F and U+007F).
    escaped = "".join(
        "\\" + c if c in '"\\' else f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c for c in value
    )
    return f'"{escaped}"'


def _authority_keys(i: int, table: object, base: Path) -> list[AuthorityKey]:
    where = f"authorities[{i}]"
    if not isinstance(table, dict):
        raise TrustPolicyError(f"{where}: got {type(table).__name__}, want a table")
    unknown = sorted(set(table) - _AUTHORITY_KEYS)
    if unknown:
        raise TrustPolicyError(f"{where}.{unknown[0]}: unknown key, want name, role, keys")
    name, role, files = table.get("name"), table.get("role"), table.get("keys")
    if not isinstance(name, str) or _AUTHORITY_NAME.fullmatch(name) is None:
        raise TrustPolicyError(f"{where}.name: got {name!r}, want 1..128 characters of [A-Za-z0-9._:-]")
    if role not in _ROLES:
        raise TrustPolicyError(f"{where}.role: got {role!r}, want 'signer' or 'countersigner'")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise TrustPolicyError(f"{where}.keys: got {files!r}, want a non-empty list of PEM file paths")
    keys = []
    for file in files:
        try:
            keys.append(load_authority_key_pem((base / file).read_bytes(), name, role))
        except OSError as exc:
            raise TrustPolicyError(f"{where}.keys: {base / file}: {exc.strerror or exc}") from None
        except AuthorityConfigError as exc:
            raise TrustPolicyError(f"{where}.keys: {base / file}: {exc}") from None
    return keys


def _public_key(verifier: object) -> bytes | None:
    return getattr(verifier, "public_key_bytes", None)
